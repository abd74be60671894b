"""Optimizers whose weights for evaluation differ from the weights they train.

Weight averaging (SWA, EMA) and schedule-free methods train one point and
evaluate another. They implement this small protocol; the
``keras_optsuite.callbacks.SwapEvaluationWeights`` callback uses it to put
the evaluation weights in the model for ``evaluate``, validation, ``predict``
and checkpoints, and the training weights back before training resumes.

The "which weights are in the model" flag is an optimizer variable, so a
checkpoint written while the evaluation weights were in the model restores
correctly: the callback swaps the training weights back on resume.
"""

from __future__ import annotations

from typing import Any, Iterator

from keras_optsuite.optimizers._wrapper import iter_optimizers


class EvaluationWeights:
    """Mixin for optimizers that hold a separate set of evaluation weights."""

    @property
    def evaluation_weights_in_use(self) -> bool:
        """Whether the model's variables currently hold the evaluation weights."""
        raise NotImplementedError

    def use_evaluation_weights(self) -> None:
        """Put the evaluation weights in the model (no-op if already there)."""
        raise NotImplementedError

    def use_training_weights(self) -> None:
        """Put the training weights back in the model (no-op if already there)."""
        raise NotImplementedError


def evaluation_weight_optimizers(optimizer: Any) -> Iterator[EvaluationWeights]:
    """Every optimizer in ``optimizer``'s tree that has evaluation weights."""
    for nested in iter_optimizers(optimizer):
        if isinstance(nested, EvaluationWeights):
            yield nested
