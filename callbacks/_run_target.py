"""Which store, experiment and run a tracked fit logs to, resolved the way MLflow resolves them.

MLflow's own Keras callback and autologging log into the active run and the
active experiment; :class:`~keras_optsuite.callbacks.MLflowTracking` follows
the same conventions, reading MLflow's process-wide state and never changing
it:

- **Run.** Inside ``with mlflow.start_run():`` the callback logs into that
  run and leaves ending it to its owner, unless ``nested=True`` (a child of
  the active run) or ``parent_run_id=`` (a child of that run) asks for a
  child run. Otherwise it creates a run of its own.
- **Store.** ``tracking_uri=``, else, inside an active run, MLflow's current
  tracking URI (where that run lives), else
  :func:`~keras_optsuite.callbacks._store.resolve_tracking_uri` (MLflow's
  URI if one is set, else the embedded ``mlruns/`` store).
- **Experiment.** ``experiment=`` wins; otherwise the parent's experiment
  (for a child run) or the active run's; then ``mlflow.set_experiment``;
  then ``MLFLOW_EXPERIMENT_NAME``, then ``MLFLOW_EXPERIMENT_ID``; then
  ``keras-optsuite``. An experiment *id* from ``set_experiment`` or
  ``MLFLOW_EXPERIMENT_ID`` names an experiment of MLflow's current store:
  its name is what the run's own store uses (created there if missing).
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from typing import Any

from keras_optsuite.callbacks._records import is_pending_run_id
from keras_optsuite.callbacks._store import resolve_tracking_uri, server_is_reachable

DEFAULT_EXPERIMENT = "keras-optsuite"
"""The experiment of a run when nothing names one."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one tracked fit logs.

    Attributes:
        tracking_uri: the store.
        client: an ``mlflow.MlflowClient`` for that store.
        attach_to: the id of the active run to log into (not created, not
            ended by the callback), or None to create a run.
        parent_run_id: the parent of the run to create (``mlflow.parentRunId``),
            possibly a pending id, or None.
        experiment: the name of the experiment to create the run in, or None
            when ``experiment_id`` is known or the run is a child of a parent
            that does not exist yet (its experiment is then the parent's).
        experiment_id: the experiment's id, when known now.
    """

    tracking_uri: str
    client: Any
    attach_to: str | None = None
    parent_run_id: str | None = None
    experiment: str | None = None
    experiment_id: str | None = None


def resolve_target(
    tracking_uri: str | None,
    experiment: str | None,
    nested: bool = False,
    parent_run_id: str | None = None,
) -> Target:
    """Resolve the store, run and experiment for a fit starting now (see the module docstring).

    Raises MLflow's own exception for a tracking URI it cannot use, and
    ``ValueError`` for an experiment that contradicts the active run or an
    experiment id that names nothing.
    """
    import mlflow

    active = mlflow.active_run()
    if active is not None and tracking_uri is not None and tracking_uri != mlflow.get_tracking_uri():
        warnings.warn(
            f"the active MLflow run {active.info.run_id} lives in {mlflow.get_tracking_uri()}, not in "
            f"tracking_uri={tracking_uri!r}: this fit logs to a run of its own there",
            stacklevel=4,
        )
        active = None
    uri = mlflow.get_tracking_uri() if active is not None else resolve_tracking_uri(tracking_uri)
    client = mlflow.MlflowClient(uri)  # raises MLflow's error for an unusable URI

    if active is not None and not nested and parent_run_id is None:
        experiment_id = active.info.experiment_id
        if experiment is not None:
            name = client.get_experiment(experiment_id).name
            if name != experiment:
                raise ValueError(
                    f"experiment={experiment!r}, but the active MLflow run {active.info.run_id} this fit "
                    f"logs into is in experiment {name!r}: drop experiment=, pass nested=True for a "
                    "child run, or end the active run first"
                )
        return Target(uri, client, attach_to=active.info.run_id, experiment_id=experiment_id)

    parent = parent_run_id if parent_run_id is not None else (active.info.run_id if active is not None else None)
    if experiment is not None:
        return Target(uri, client, parent_run_id=parent, experiment=experiment)
    if parent is not None:
        if parent_run_id is None:  # nested in the active run: its experiment
            assert active is not None  # the parent is the active run
            return Target(uri, client, parent_run_id=parent, experiment_id=active.info.experiment_id)
        if is_pending_run_id(parent) or not server_is_reachable(uri):
            return Target(uri, client, parent_run_id=parent)  # the parent's, once it exists
        return Target(uri, client, parent_run_id=parent, experiment_id=client.get_run(parent).info.experiment_id)
    return Target(uri, client, experiment=active_experiment_name())


def active_experiment_name() -> str:
    """The experiment MLflow would use now: set_experiment, then the environment, then ours."""
    import mlflow
    from mlflow.tracking import fluent

    # The one private read: set_experiment keeps its choice in this module
    # global (it also writes MLFLOW_EXPERIMENT_ID, which a later
    # MLFLOW_EXPERIMENT_NAME must not override).
    experiment_id, source = getattr(fluent, "_active_experiment_id", None), "mlflow.set_experiment"
    if not experiment_id:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "").strip()
        if name:
            return name
        experiment_id, source = os.environ.get("MLFLOW_EXPERIMENT_ID", "").strip(), "MLFLOW_EXPERIMENT_ID"
    if not experiment_id:
        return DEFAULT_EXPERIMENT
    from mlflow.exceptions import MlflowException

    uri = mlflow.get_tracking_uri()
    try:
        return mlflow.MlflowClient(uri).get_experiment(experiment_id).name
    except MlflowException as error:
        raise ValueError(
            f"{source} names experiment id {experiment_id!r}, which {uri} does not have ({error.message})"
        ) from None


def logged_steps(client: Any, run_id: str) -> dict[str, int]:
    """The last step of every metric ``run_id`` has logged (a resumed job logs after them)."""
    run = client.get_run(run_id)
    return {key: max(m.step for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
