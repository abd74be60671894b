"""Pruning inside a trial: the median rule, decided by the oracle."""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from keras_optsuite._validation import check_non_negative_int, check_positive_int


@dataclasses.dataclass(frozen=True)
class MedianPruning:
    """Stop a trial whose objective so far is worse than the median of completed trials.

    Optuna's ``MedianPruner`` rule, per epoch: at epoch ``e`` (0-based) a
    trial is pruned when

    1. ``e >= warmup_epochs`` (no pruning during the warmup epochs), and
    2. at least ``min_trials`` trials have completed (pruned and failed
       trials do not count), and
    3. at least ``min_trials_at_epoch`` of them reported epoch ``e``, and
    4. the trial's best objective over epochs ``0..e`` is worse than the
       median of those completed trials' objectives at epoch ``e`` (a NaN
       best is worse than anything).

    The oracle holds the epoch values and applies the rule (the tuners of
    :mod:`keras_optsuite.tuning` report each epoch through
    ``oracle.update_trial``), so in a distributed search every worker is
    judged against the same completed trials. A pruned trial stops at the
    end of that epoch and is reported to the oracle with that epoch's values.

    Args:
        warmup_epochs: epochs never pruned (Optuna's ``n_warmup_steps``).
            Defaults to `0`.
        min_trials: completed trials needed before pruning starts (Optuna's
            ``n_startup_trials``). Defaults to `5`.
        min_trials_at_epoch: completed trials that must have reached the
            epoch (Optuna's ``n_min_trials``). Defaults to `1`.

    Example:
    >>> MedianPruning(min_trials=2).should_prune(1, [0.9, 0.8], [0.5, 0.6], "min")
    True
    """

    warmup_epochs: int = 0
    min_trials: int = 5
    min_trials_at_epoch: int = 1

    def __post_init__(self) -> None:
        check_non_negative_int("warmup_epochs", self.warmup_epochs)
        check_non_negative_int("min_trials", self.min_trials)
        check_positive_int("min_trials_at_epoch", self.min_trials_at_epoch)

    def should_prune(
        self,
        epoch: int,
        values_so_far: Sequence[float],
        completed_at_epoch: Sequence[float],
        direction: str,
        completed_trials: int | None = None,
    ) -> bool:
        """The rule above.

        Args:
            epoch: the epoch just ended (0-based).
            values_so_far: this trial's objective at epochs ``0..epoch``.
            completed_at_epoch: the objective at ``epoch`` of each completed
                trial that reached it.
            direction: ``"min"`` or ``"max"``.
            completed_trials: how many trials completed (defaults to
                ``len(completed_at_epoch)``).
        """
        if epoch < self.warmup_epochs:
            return False
        completed = len(completed_at_epoch) if completed_trials is None else completed_trials
        if completed < self.min_trials or len(completed_at_epoch) < self.min_trials_at_epoch:
            return False
        finite = [v for v in values_so_far if not math.isnan(v)]
        if not finite:
            return True
        best = min(finite) if direction == "min" else max(finite)
        median = float(np.nanmedian(np.asarray(completed_at_epoch, dtype=np.float64)))
        return best > median if direction == "min" else best < median
