"""Keras Tuner's tuners with every search tracked in MLflow.

One parent run per search, one child run per trial (the full
:class:`keras_optsuite.callbacks.MLflowTracking` record), failures kept as
FAILED child runs, each family's defaults tried first, and optional pruning
inside a trial. The search engine is Keras Tuner's: these classes subclass
its tuners and oracles and change only what is said here.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import keras
import keras_tuner
import numpy as np
from keras_tuner.src.engine import trial as trial_module

from keras_optsuite._validation import check_positive_int
from keras_optsuite.tuning import _memory, _report
from keras_optsuite.tuning.pruning import MedianPruning
from keras_optsuite.tuning.space import OPTIMIZER

DEFAULT_EXPERIMENT = "keras-optsuite-tuning"
#: The metric key with which a tuner reports one epoch's objective to its oracle.
EPOCH_REPORT = "keras_optsuite/epoch_report"
#: Hyperband's bookkeeping hyperparameters: tags of a child run, not params.
BOOKKEEPING_PREFIX = "tuner/"
TAG = "keras_optsuite."


# -- oracles ---------------------------------------------------------------------------------

class _OracleExtras:
    """In front of a Keras Tuner oracle: each family's defaults first, epoch reports, pruning."""

    def _init_extras(self, pruning: MedianPruning | None, defaults_first: bool) -> None:
        if pruning is not None and not isinstance(pruning, MedianPruning):
            raise ValueError(f"pruning must be a MedianPruning or None, got pruning={pruning!r}")
        self.pruning = pruning
        self.defaults_first = bool(defaults_first)
        self.defaults_tried: list[str] = []
        self.epoch_values: dict[str, dict[str, float]] = {}
        self.pruned: dict[str, int] = {}

    # Each family's documented defaults are a trial before any sampled one.
    def populate_space(self, trial_id: str) -> dict[str, Any]:
        if self.defaults_first:
            values = self._next_defaults()
            if values is not None:
                return {"status": trial_module.TrialStatus.RUNNING, "values": values}
        return super().populate_space(trial_id)

    def _next_defaults(self) -> dict[str, Any] | None:
        choice = next((hp for hp in self.hyperparameters.space if hp.name == OPTIMIZER), None)
        if choice is None:
            return None
        for family in choice.values:
            if family in self.defaults_tried:
                continue
            self.defaults_tried.append(family)
            hps = self.hyperparameters.copy()
            hps.values = {OPTIMIZER: family}
            for hp in hps.space:  # parents come before their conditional children
                if hp.name not in hps.values and hps.is_active(hp):
                    hps.values[hp.name] = hp.default
            if not self._duplicate(hps.values):
                return hps.values
        return None

    @keras_tuner.synchronized
    def update_trial(self, trial_id: str, metrics: dict, step: int = 0) -> Any:
        if EPOCH_REPORT not in metrics:
            return super().update_trial(trial_id, metrics, step=step)
        trial = self.trials[trial_id]
        value = float(metrics[self.objective.name])
        values = self.epoch_values.setdefault(trial_id, {})
        values[str(int(step))] = value
        reply = copy.copy(trial)
        if self.pruning is not None and self._should_prune(trial_id, int(step)):
            self.pruned[trial_id] = int(step)
            reply.status = trial_module.TrialStatus.STOPPED
        self.save()
        return reply

    def _should_prune(self, trial_id: str, epoch: int) -> bool:
        completed = [
            tid for tid, trial in self.trials.items()
            if trial.status == trial_module.TrialStatus.COMPLETED and tid not in self.pruned and tid != trial_id
        ]
        at_epoch = [self.epoch_values[tid][str(epoch)] for tid in completed
                    if str(epoch) in self.epoch_values.get(tid, {})]
        so_far = [v for e, v in self.epoch_values[trial_id].items() if int(e) <= epoch]
        assert self.pruning is not None  # only asked when pruning is on
        return self.pruning.should_prune(epoch, so_far, at_epoch, self.objective.direction, len(completed))

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["keras_optsuite"] = {
            "defaults_tried": self.defaults_tried,
            "epoch_values": self.epoch_values,
            "pruned": self.pruned,
        }
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        extras = state.get("keras_optsuite", {})
        self.defaults_tried = list(extras.get("defaults_tried", []))
        self.epoch_values = dict(extras.get("epoch_values", {}))
        self.pruned = dict(extras.get("pruned", {}))


def _oracle_class(base: type) -> type:
    def __init__(self, *args, pruning=None, defaults_first=True, **kwargs):
        base.__init__(self, *args, **kwargs)
        self._init_extras(pruning, defaults_first)

    return type(base.__name__, (_OracleExtras, base), {"__init__": __init__, "__module__": __name__})


RandomSearchOracle = _oracle_class(keras_tuner.oracles.RandomSearchOracle)
BayesianOptimizationOracle = _oracle_class(keras_tuner.oracles.BayesianOptimizationOracle)
GridSearchOracle = _oracle_class(keras_tuner.oracles.GridSearchOracle)
HyperbandOracle = _oracle_class(keras_tuner.oracles.HyperbandOracle)


# -- callbacks inside a trial ----------------------------------------------------------------

class _FailOnNonFinite(keras.callbacks.Callback):
    """Ends the trial FAILED (no retries) as soon as the loss is NaN or infinite."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise keras_tuner.errors.FailedTrialError(
                f"the loss became {float(loss)} at batch {batch} of epoch {self._epoch}"
            )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    _epoch = 0


class _SnapshotRunState(keras.callbacks.Callback):
    """Keeps a copy of MLflowTracking's resume state (deleted when its run ends FINISHED).

    Hyperband's next trial of the same chain restores it, so MLflowTracking
    continues the same run (epochs, best model and logged steps included).
    """

    def __init__(self, backup_dir: Path) -> None:
        super().__init__()
        from keras_optsuite.callbacks._resume import RunState

        self.state = RunState(backup_dir)
        self.snapshot = backup_dir.with_name(backup_dir.name + ".last.json")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        saved = self.state.load()  # MLflowTracking (listed before) has just saved this epoch
        if saved is not None:
            self.snapshot.parent.mkdir(parents=True, exist_ok=True)
            self.snapshot.write_text(json.dumps(saved))


class _EpochReporter(keras.callbacks.Callback):
    """Reports each epoch's objective to the oracle, which may answer: stop."""

    def __init__(self, tuner: Any, trial_id: str) -> None:
        super().__init__()
        self.tuner, self.trial_id = tuner, trial_id

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        name = self.tuner.oracle.objective.name
        logs = logs or {}
        if name not in logs:
            return
        reply = self.tuner.oracle.update_trial(
            self.trial_id, {name: float(logs[name]), EPOCH_REPORT: 1.0}, step=epoch
        )
        if reply.status == trial_module.TrialStatus.STOPPED:
            self.tuner._pruned_at[self.trial_id] = epoch
            self.model.stop_training = True


# -- tuners ----------------------------------------------------------------------------------

class _TrackedTuner:
    """In front of a Keras Tuner tuner: the MLflow parent run and one child run per trial."""

    def _start(self, oracle_class: type, hypermodel: Any, tuner_kwargs: dict[str, Any],
               tracking: tuple[str, str | None, str | None], budgets: dict[str, Any], **oracle_arguments: Any) -> None:
        """What every tracked tuner's constructor does once its own arguments are checked.

        Checks the budgets, sets up tracking, builds the oracle and starts
        Keras Tuner. Its "Reloading Tuner from ..." line goes to stderr:
        resuming is progress, and stdout carries a command's results.
        """
        _check_budget(executions_per_trial=tuner_kwargs.get("executions_per_trial"), **budgets)
        self._init_tracking(*tracking, oracle_arguments.get("pruning"))
        oracle = oracle_class(**oracle_arguments)
        with contextlib.redirect_stdout(sys.stderr):
            keras_tuner.Tuner.__init__(self, oracle, hypermodel, **tuner_kwargs)

    def _init_tracking(self, experiment: str, tracking_uri: str | None, run_name: str | None,
                       pruning: MedianPruning | None = None) -> None:
        if not isinstance(experiment, str) or not experiment.strip():
            raise ValueError(f"experiment must be a non-empty string, got experiment={experiment!r}")
        self.experiment = experiment
        self.tracking_uri = tracking_uri
        self.run_name = run_name
        self.parent_run_id: str | None = None
        # Set before search() to nest the search's run under another run
        # (the bake-off puts each optimizer's search under its own run).
        self.search_parent_run_id: str | None = None
        self.child_runs: dict[str, str] = {}
        self._pruned_at: dict[str, int] = {}
        self._chains: dict[str, str] = {}  # Hyperband trial id -> the first trial of its chain
        self._pruning = pruning  # also here: a distributed worker's oracle is a gRPC client
        self._parent_open = False
        self._client: Any = None
        self._uri: str | None = None
        self._experiment_id: str | None = None

    # state saved with the tuner (tuner0.json), so a resumed search keeps its parent run
    def get_state(self) -> dict[str, Any]:
        return {**super().get_state(), "mlflow": {"parent_run_id": self.parent_run_id,
                                                  "child_runs": self.child_runs,
                                                  "pruned_at": self._pruned_at,
                                                  "chains": self._chains}}

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        saved = state.get("mlflow", {})
        self.parent_run_id = saved.get("parent_run_id")
        self.child_runs = dict(saved.get("child_runs", {}))
        self._pruned_at = dict(saved.get("pruned_at", {}))
        self._chains = dict(saved.get("chains", {}))

    def search(self, *fit_args: Any, **fit_kwargs: Any) -> None:
        from keras_tuner.src.distribute import utils as distribute_utils

        chief = distribute_utils.is_chief_oracle()
        try:
            if chief:
                # Keras Tuner's chief only serves the oracle to the workers: it opens the
                # parent run for them (they read its id from the shared project directory),
                # and records the search's end when the last worker is done.
                self._open_parent()
                _write_json(self._parent_file(), {"parent_run_id": self.parent_run_id, "tracking_uri": self._uri})
            if chief:
                self._serve_oracle()
                self._close_parent()
            else:
                super().search(*fit_args, **fit_kwargs)
        except BaseException as error:
            if self.parent_run_id is not None and self._client is not None:
                status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
                self._log_text(self.parent_run_id, "traceback.txt", traceback.format_exc())
                self._client.set_terminated(self.parent_run_id, status)
            raise

    def _serve_oracle(self, poll_seconds: float = 0.5) -> None:
        """Keras Tuner's chief server (``oracle_chief.start_server``), polling every ``poll_seconds``.

        Keras Tuner's own loop checks every 20 s whether the last worker is
        done once one has finished, so the chief lingered up to 20 s.
        """
        from concurrent import futures

        import grpc
        from keras_tuner.src import protos
        from keras_tuner.src.distribute import oracle_chief

        self.save()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        servicer = oracle_chief.OracleServicer(self.oracle)
        protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
        server.add_insecure_port(f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}")
        server.start()
        try:
            while not (servicer.stop_triggered and oracle_chief.exit_chief(self.oracle)):
                time.sleep(poll_seconds)
        finally:
            server.stop(grace=1.0)

    def _parent_file(self) -> Path:
        return Path(self.project_dir) / "mlflow_parent_run.json"

    def on_search_begin(self) -> None:
        super().on_search_begin()
        if self._is_worker():
            self._join_parent()
        else:
            self._open_parent()

    def _join_parent(self, timeout: float = 120.0) -> None:
        """A distributed worker: the chief's parent run (from the shared project directory)."""
        import mlflow

        from keras_optsuite.callbacks._store import get_or_create_experiment

        deadline = time.monotonic() + timeout
        while not self._parent_file().exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the chief wrote no {self._parent_file()} within {timeout:.0f} s: "
                                   "workers need the chief's directory (shared storage)")
            time.sleep(0.2)
        saved = json.loads(self._parent_file().read_text())
        self.parent_run_id, self._uri = saved["parent_run_id"], saved["tracking_uri"]
        self._client = mlflow.MlflowClient(self._uri)
        self._experiment_id = get_or_create_experiment(self._client, self.experiment)

    def _open_parent(self) -> None:
        import mlflow

        from keras_optsuite.callbacks._store import get_or_create_experiment, resolve_tracking_uri

        if self._parent_open:  # a distributed chief opened it before serving the oracle
            return
        self._parent_open = True
        self._uri = resolve_tracking_uri(self.tracking_uri)
        self._client = client = mlflow.MlflowClient(self._uri)
        self._experiment_id = get_or_create_experiment(client, self.experiment)
        if self.parent_run_id is not None:
            client.update_run(self.parent_run_id, status="RUNNING")
            resumes = int(client.get_run(self.parent_run_id).data.tags.get(TAG + "resumes", "0")) + 1
            client.set_tag(self.parent_run_id, TAG + "resumes", str(resumes))
            return
        tags = {TAG + "tuner": type(self).__name__}
        if self.search_parent_run_id is not None:
            tags["mlflow.parentRunId"] = self.search_parent_run_id
        run = client.create_run(self._experiment_id, run_name=self.run_name, tags=tags)
        self.parent_run_id = run.info.run_id
        from mlflow.entities import Param

        client.log_batch(self.parent_run_id, params=[Param(k, str(v)) for k, v in self._settings().items()])
        self._log_text(self.parent_run_id, "search_space.json",
                       json.dumps(self.oracle.get_space().get_config(), indent=2, default=str))
        self.save()  # the parent run id is in tuner0.json before the first trial

    def _settings(self) -> dict[str, Any]:
        oracle = self.oracle
        settings = {
            "tuner": type(self).__name__,
            "objective": oracle.objective.name,
            "objective_direction": oracle.objective.direction,
            "max_trials": getattr(oracle, "max_trials", None),
            "seed": getattr(oracle, "seed", None),
            "executions_per_trial": getattr(self, "executions_per_trial", None),
            "max_retries_per_trial": oracle.max_retries_per_trial,
            "max_consecutive_failed_trials": oracle.max_consecutive_failed_trials,
            "defaults_first": getattr(oracle, "defaults_first", None),
            "pruning": repr(getattr(oracle, "pruning", None)),
            "project_dir": self.project_dir,
        }
        for name in ("max_epochs", "factor", "hyperband_iterations", "num_initial_points", "alpha", "beta"):
            if hasattr(oracle, name):
                settings[name] = getattr(oracle, name)
        optimizers = getattr(self.hypermodel, "optimizers", None)
        if optimizers:
            settings["optimizers"] = ",".join(optimizers)
        return settings

    def _log_text(self, run_id: str, name: str, text: str, artifact_path: str | None = None) -> None:
        with tempfile.TemporaryDirectory(prefix="optsuite-tuning-") as directory:
            path = Path(directory) / name
            path.write_text(text)
            self._client.log_artifact(run_id, str(path), artifact_path)

    # -- one trial = one child run -----------------------------------------------------
    def _build_and_fit_model(self, trial: Any, *args: Any, **kwargs: Any) -> Any:
        from keras_optsuite.callbacks import MLflowTracking

        hp = trial.hyperparameters
        trial_id = str(trial.trial_id)
        family = hp.values.get(OPTIMIZER)
        bookkeeping = {k: str(v) for k, v in hp.values.items() if k.startswith(BOOKKEEPING_PREFIX)}
        tags = {TAG + "trial_id": trial_id, TAG + "tuner_id": str(self.tuner_id), **bookkeeping}
        backup_dir = None
        if "tuner/epochs" in hp.values:  # Hyperband: a continued trial continues its run
            previous = str(hp.values.get("tuner/trial_id") or "")
            chain = self._chains.get(previous, trial_id) if previous else trial_id
            self._chains[trial_id] = chain
            backup_dir = Path(self.project_dir) / "mlflow-runs" / f"chain_{chain}"
            snapshot = backup_dir.with_name(backup_dir.name + ".last.json")
            if previous and snapshot.exists():
                from keras_optsuite.callbacks._resume import RunState

                RunState(backup_dir).save(json.loads(snapshot.read_text()))
        else:
            # A search killed (even with kill -9) and started again with overwrite=False resumes
            # the interrupted trial from its last finished epoch, in the same child run.
            backup_dir = Path(self.get_trial_dir(trial_id)) / "backup"
        tracking = MLflowTracking(
            experiment=self.experiment,
            run_name=f"trial_{trial_id}" + (f"-{family}" if family else ""),
            tags=tags,
            tracking_uri=self._uri,
            log_model=False,
            backup_dir=backup_dir,
            parent_run_id=self.parent_run_id,
        )
        callbacks = list(kwargs.pop("callbacks", None) or [])
        if "tuner/epochs" in hp.values:
            callbacks += [tracking, _FailOnNonFinite(), _SnapshotRunState(backup_dir)]
        else:
            # After the tracking callback: it flushes the epoch's records before the backup counts it done.
            callbacks += [tracking, keras.callbacks.BackupAndRestore(str(backup_dir)), _FailOnNonFinite()]
        if self._pruning is not None:
            callbacks.append(_EpochReporter(self, trial_id))
        try:
            # TensorFlow keeps every traced train step alive through its gradient registry
            # (keras-tuner#873); what this trial registered goes when it ends.
            with _memory.releasing_custom_gradients(), tracking:
                results = super()._build_and_fit_model(trial, *args, callbacks=callbacks, **kwargs)
            if trial_id in self._pruned_at and isinstance(results, keras.callbacks.History):
                # A pruned trial is reported with its last epoch's values (as Optuna does), not its best.
                return {name: float(values[-1]) for name, values in results.history.items() if values}
            return results
        except BaseException:
            if tracking.run_id is None:  # failed before fit started: still a FAILED child run
                run = self._client.create_run(self._experiment_id, run_name=tracking.run_name,
                                              tags={**tags, "mlflow.parentRunId": self.parent_run_id})
                self._log_text(run.info.run_id, "traceback.txt", traceback.format_exc())
                self._client.set_terminated(run.info.run_id, "FAILED")
                self.child_runs[trial_id] = run.info.run_id
            raise
        finally:
            if tracking.run_id is not None:
                self.child_runs[trial_id] = tracking.run_id
            run_id = self.child_runs.get(trial_id)
            if run_id is not None:
                self._log_hyperparameters(run_id, hp)
                if "tuner/epochs" in hp.values:  # the continued run says which trial it is at now
                    from mlflow.entities import RunTag

                    self._client.log_batch(run_id, tags=[RunTag(k, v) for k, v in {
                        **bookkeeping, TAG + "trial_id": trial_id}.items()])

    def _log_hyperparameters(self, run_id: str, hp: Any) -> None:
        from mlflow.entities import Param

        from keras_optsuite.callbacks._records import is_pending_run_id

        if is_pending_run_id(run_id):
            return
        params = [Param(f"hp.{name}", str(value)) for name, value in hp.values.items()
                  if hp.is_active(name) and not name.startswith(BOOKKEEPING_PREFIX)]
        try:
            self._client.log_batch(run_id, params=params)
        except Exception as error:  # noqa: BLE001 - a retried trial logs the same params again
            if "already" not in str(error).lower() and "changing param" not in str(error).lower():
                raise

    def load_model(self, trial: Any) -> keras.Model:
        """Keras Tuner's ``load_model`` with the optimizer built first, so its state loads too.

        Keras Tuner rebuilds the model and calls ``load_weights``; with the
        optimizer not built yet Keras drops the saved optimizer state with a
        warning (the best model's logged copy then has no optimizer state).
        """
        from keras_tuner.src import utils as kt_utils
        from keras_tuner.src.engine.tuner import maybe_distribute

        model = self._try_build(trial.hyperparameters)
        if not model.built:
            model.build_from_config(kt_utils.load_json(self._get_build_config_fname(trial.trial_id)))
        with maybe_distribute(self.distribution_strategy):
            if model.optimizer is not None and not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
            model.load_weights(self._get_checkpoint_fname(trial.trial_id))
        return model

    def on_trial_end(self, trial: Any) -> None:
        super().on_trial_end(trial)
        self._record_trial_end(trial)

    def _record_trial_end(self, trial: Any) -> None:
        from mlflow.entities import Metric, RunTag

        client, trial_id = self._client, str(trial.trial_id)
        ended = self.oracle.get_trial(trial_id)
        run_id = self.child_runs.get(trial_id)
        if run_id is not None:
            tags = [RunTag(TAG + "trial_status", str(ended.status))]
            if ended.score is not None:
                tags.append(RunTag(TAG + "trial_score", repr(float(ended.score))))
            if trial_id in self._pruned_at:
                tags += [RunTag(TAG + "pruned", "true"),
                         RunTag(TAG + "pruned_at_epoch", str(self._pruned_at[trial_id]))]
            client.log_batch(run_id, tags=tags)
        now = int(1000 * time.time())
        step = int(trial_id) if trial_id.isdigit() else len(self.child_runs)
        metrics = []
        if ended.status == trial_module.TrialStatus.COMPLETED and ended.score is not None:
            metrics.append(Metric("trial_score", float(ended.score), now, step))
        tags = []
        best = self.oracle.get_best_trials(1)
        if best and best[0].status == trial_module.TrialStatus.COMPLETED and best[0].score is not None:
            metrics.append(Metric("best_score", float(best[0].score), now, step))
            values = _active_values(best[0].hyperparameters)
            tags += [RunTag(TAG + "best_trial_id", str(best[0].trial_id)),
                     RunTag(TAG + "best_hyperparameters", json.dumps(values, default=str)[:7999])]
            if str(best[0].trial_id) in self.child_runs:
                tags.append(RunTag(TAG + "best_run_id", self.child_runs[str(best[0].trial_id)]))
        client.log_batch(self.parent_run_id, metrics=metrics, tags=tags)

    def on_search_end(self) -> None:
        super().on_search_end()
        if not self._is_worker():  # a distributed chief closes the parent for all workers
            self._close_parent()

    def _close_parent(self) -> None:
        self._finish_parent()
        self._client.set_terminated(self.parent_run_id, "FINISHED")
        self._parent_open = False

    def _finish_parent(self) -> None:
        oracle, client, parent = self.oracle, self._client, self.parent_run_id
        self._log_final_best_score()
        # Trials other processes ran (distributed workers) are found by their tags.
        for run in client.search_runs([self._experiment_id], f"tags.mlflow.parentRunId = '{parent}'",
                                      max_results=10000):
            trial_id = run.data.tags.get(TAG + "trial_id")
            if trial_id is not None:
                self.child_runs.setdefault(trial_id, run.info.run_id)
                if run.data.tags.get(TAG + "pruned_at_epoch") is not None:
                    self._pruned_at.setdefault(trial_id, int(run.data.tags[TAG + "pruned_at_epoch"]))
        rows = []
        for trial_id in sorted(oracle.trials, key=lambda t: (len(t), t)):
            trial = oracle.trials[trial_id]
            rows.append({
                "trial_id": trial_id,
                "status": str(trial.status),
                "score": float(trial.score) if trial.score is not None else None,
                "best_step": trial.best_step,
                "pruned_at_epoch": self._pruned_at.get(trial_id),
                "run_id": self.child_runs.get(trial_id),
                **{f"hp.{k}": v for k, v in _active_values(trial.hyperparameters).items()},
            })
        with tempfile.TemporaryDirectory(prefix="optsuite-tuning-") as scratch:
            directory = Path(scratch)
            _report.write_results(rows, directory / "results.csv")
            scores = [(int(r["trial_id"]) if r["trial_id"].isdigit() else i, r["score"])
                      for i, r in enumerate(rows) if r["status"] == "COMPLETED"]
            _report.plot_objective(scores, oracle.objective.direction, oracle.objective.name,
                                   directory / "objective.png")
            names = sorted({k for r in rows for k in r if k.startswith("hp.")})
            _report.plot_hyperparameters(rows, names, oracle.objective.name, directory / "hyperparameters.png")
            for name in ("results.csv", "objective.png", "hyperparameters.png"):
                client.log_artifact(parent, str(directory / name))
        self._log_best_model()

    def _log_final_best_score(self) -> None:
        """Log the search's best score last, at the last trial's step.

        Distributed workers log ``best_score`` as each of their trials ends,
        from what the oracle knew then: a worker finishing trial 3 before the
        other finishes a better trial 2 leaves a worse value at the latest
        step. The closing process logs the final best at that step, later.
        """
        from mlflow.entities import Metric

        best = self.oracle.get_best_trials(1)
        if not best or best[0].status != trial_module.TrialStatus.COMPLETED or best[0].score is None:
            return
        steps = [int(t) for t in self.oracle.trials if str(t).isdigit()]
        step = max(steps) if steps else max(len(self.oracle.trials) - 1, 0)
        self._client.log_batch(self.parent_run_id, metrics=[
            Metric("best_score", float(best[0].score), int(1000 * time.time()) + 1, step)])

    def _log_best_model(self) -> None:
        from keras_optsuite.callbacks._logged_model import input_example, log_keras_model

        best = self.oracle.get_best_trials(1)
        parent, experiment_id = self.parent_run_id, self._experiment_id
        if not best or best[0].status != trial_module.TrialStatus.COMPLETED or parent is None or experiment_id is None:
            return
        try:
            model = self.load_model(best[0])
            example = input_example(model)
            if example is None:
                return
            model_id = log_keras_model(self._client, parent, experiment_id, model, "best", example, step=0)
            self._client.set_tag(parent, TAG + "best_model_id", model_id)
        except Exception as error:  # noqa: BLE001 - the search's record stays; say what failed
            self._log_text(parent, "best_model_error.txt", traceback.format_exc())
            print(f"keras_optsuite.tuning: could not log the best model: {error!r}")


def _active_values(hp: Any) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in hp.values.items()
            if hp.is_active(k) and not k.startswith(BOOKKEEPING_PREFIX)}


def _write_json(path: Path, value: Any) -> None:
    from keras_optsuite.callbacks._durable import replace_file

    replace_file(path, json.dumps(value))  # readers see the whole file or none


def _check_budget(**budgets: Any) -> None:
    for name, value in budgets.items():
        if value is not None:
            check_positive_int(name, value)


_TRACKING_DOC = """
    Tracked in MLflow: one parent run per search (experiment ``experiment``,
    named ``run_name``, store ``tracking_uri`` or MLflow's default), one
    child run per trial (see the README, "Tuning optimizers with Keras
    Tuner"). Each family's documented defaults are tried first
    (``defaults_first``); ``pruning=MedianPruning(...)`` stops trials early.
    Budgets (``max_trials``, ...) must be positive integers: a ValueError
    names the bad one before any trial runs.
"""


class RandomSearch(_TrackedTuner, keras_tuner.RandomSearch):
    """Keras Tuner's ``RandomSearch``, tracked in MLflow, with pruning.

    Same arguments as ``keras_tuner.RandomSearch``, plus ``experiment``,
    ``tracking_uri``, ``run_name``, ``pruning`` and ``defaults_first``.

    Example:
    >>> tuner = RandomSearch(OptimizerHyperModel(build_model, loss, optimizers=["Adam", "RAdam"]),
    ...                      objective="val_loss", max_trials=6, experiment="digits")
    >>> tuner.search(x, y, validation_data=(x_val, y_val), epochs=5)
    """

    __doc__ += _TRACKING_DOC

    def __init__(self, hypermodel: Any = None, objective: Any = None, max_trials: int = 10, seed: int | None = None,
                 hyperparameters: Any = None, tune_new_entries: bool = True, allow_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3, *,
                 experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None,
                 run_name: str | None = None, pruning: MedianPruning | None = None, defaults_first: bool = True,
                 **kwargs: Any) -> None:
        self._start(
            RandomSearchOracle, hypermodel, kwargs, (experiment, tracking_uri, run_name),
            {"max_trials": max_trials, "max_consecutive_failed_trials": max_consecutive_failed_trials},
            objective=objective, max_trials=max_trials, seed=seed, hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries, allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
            pruning=pruning, defaults_first=defaults_first,
        )


class BayesianOptimization(_TrackedTuner, keras_tuner.BayesianOptimization):
    """Keras Tuner's ``BayesianOptimization``, tracked in MLflow, with pruning.

    Same arguments as ``keras_tuner.BayesianOptimization``, plus
    ``experiment``, ``tracking_uri``, ``run_name``, ``pruning`` and
    ``defaults_first``. The family's conditional scopes keep the inactive
    families' hyperparameters out of each trial.

    Example:
    >>> tuner = BayesianOptimization(hypermodel, objective="val_loss", max_trials=20, experiment="digits")
    """

    __doc__ += _TRACKING_DOC

    def __init__(self, hypermodel: Any = None, objective: Any = None, max_trials: int = 10,
                 num_initial_points: int | None = None, alpha: float = 1e-4, beta: float = 2.6,
                 seed: int | None = None, hyperparameters: Any = None, tune_new_entries: bool = True,
                 allow_new_entries: bool = True, max_retries_per_trial: int = 0,
                 max_consecutive_failed_trials: int = 3, *, experiment: str = DEFAULT_EXPERIMENT,
                 tracking_uri: str | None = None, run_name: str | None = None,
                 pruning: MedianPruning | None = None, defaults_first: bool = True, **kwargs: Any) -> None:
        self._start(
            BayesianOptimizationOracle, hypermodel, kwargs, (experiment, tracking_uri, run_name),
            {"max_trials": max_trials, "num_initial_points": num_initial_points,
             "max_consecutive_failed_trials": max_consecutive_failed_trials},
            objective=objective, max_trials=max_trials, num_initial_points=num_initial_points, alpha=alpha,
            beta=beta, seed=seed, hyperparameters=hyperparameters, tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries, max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
            pruning=pruning, defaults_first=defaults_first,
        )


class GridSearch(_TrackedTuner, keras_tuner.GridSearch):
    """Keras Tuner's ``GridSearch``, tracked in MLflow, with pruning.

    Same arguments as ``keras_tuner.GridSearch``, plus ``experiment``,
    ``tracking_uri``, ``run_name`` and ``pruning``. The grid keeps Keras
    Tuner's order (no defaults-first trials, which would disturb it).

    Example:
    >>> tuner = GridSearch(hypermodel, objective="val_loss", max_trials=8, experiment="digits")
    """

    __doc__ += _TRACKING_DOC

    def __init__(self, hypermodel: Any = None, objective: Any = None, max_trials: int | None = None,
                 seed: int | None = None, hyperparameters: Any = None, tune_new_entries: bool = True,
                 allow_new_entries: bool = True, max_retries_per_trial: int = 0,
                 max_consecutive_failed_trials: int = 3, *, experiment: str = DEFAULT_EXPERIMENT,
                 tracking_uri: str | None = None, run_name: str | None = None,
                 pruning: MedianPruning | None = None, **kwargs: Any) -> None:
        self._start(
            GridSearchOracle, hypermodel, kwargs, (experiment, tracking_uri, run_name),
            {"max_trials": max_trials, "max_consecutive_failed_trials": max_consecutive_failed_trials},
            objective=objective, max_trials=max_trials, seed=seed, hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries, allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
            pruning=pruning, defaults_first=False,
        )


class Hyperband(_TrackedTuner, keras_tuner.Hyperband):
    """Keras Tuner's ``Hyperband``, tracked in MLflow.

    Same arguments as ``keras_tuner.Hyperband``, plus ``experiment``,
    ``tracking_uri`` and ``run_name``. Hyperband's bookkeeping values
    (``tuner/epochs``, ``tuner/initial_epoch``, ``tuner/bracket``,
    ``tuner/round``, ``tuner/trial_id``) are tags of the child runs, not
    params. A trial that continues an earlier one (``tuner/trial_id``)
    continues its run: the metrics go on at the following epochs, and the
    tag ``keras_optsuite.trial_id`` and the bookkeeping tags follow the
    latest trial (through ``MLflowTracking``'s resume). Hyperband stops
    trials by its own schedule: no ``pruning`` and no defaults-first trials.

    Example:
    >>> tuner = Hyperband(hypermodel, objective="val_loss", max_epochs=9, experiment="digits")
    """

    __doc__ += _TRACKING_DOC

    def __init__(self, hypermodel: Any = None, objective: Any = None, max_epochs: int = 100, factor: int = 3,
                 hyperband_iterations: int = 1, seed: int | None = None, hyperparameters: Any = None,
                 tune_new_entries: bool = True, allow_new_entries: bool = True, max_retries_per_trial: int = 0,
                 max_consecutive_failed_trials: int = 3, *, experiment: str = DEFAULT_EXPERIMENT,
                 tracking_uri: str | None = None, run_name: str | None = None, **kwargs: Any) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 2:
            raise ValueError(f"factor must be an integer >= 2, got factor={factor!r}")
        self._start(
            HyperbandOracle, hypermodel, kwargs, (experiment, tracking_uri, run_name),
            {"max_epochs": max_epochs, "hyperband_iterations": hyperband_iterations,
             "max_consecutive_failed_trials": max_consecutive_failed_trials},
            objective=objective, max_epochs=max_epochs, factor=factor,
            hyperband_iterations=hyperband_iterations, seed=seed, hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries, allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
            pruning=None, defaults_first=False,
        )
