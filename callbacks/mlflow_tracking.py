"""One Keras callback that gives every run the same complete MLflow record."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import keras
import numpy as np

from keras_optsuite._validation import check_choice, check_positive_int
from keras_optsuite.callbacks import _run_params
from keras_optsuite.callbacks._journal import Journal
from keras_optsuite.callbacks._logged_model import input_example, log_keras_model
from keras_optsuite.callbacks._process_hooks import ProcessHooks
from keras_optsuite.callbacks._records import is_pending_run_id
from keras_optsuite.callbacks._resume import RunState
from keras_optsuite.callbacks._run_target import Target as _Target
from keras_optsuite.callbacks._run_target import logged_steps as _logged_steps
from keras_optsuite.callbacks._run_target import resolve_target
from keras_optsuite.callbacks._sink import Sink
from keras_optsuite.callbacks._step_telemetry import StepTelemetry
from keras_optsuite.callbacks._step_telemetry import metrics as step_metrics
from keras_optsuite.callbacks._store import (
    default_journal_path,
    fail_fast_http,
    get_or_create_experiment,
    server_is_reachable,
)
from keras_optsuite.callbacks.compare import lower_is_better

MODES = ("auto", "min", "max")
# Records wait up to this long (seconds) for others, to share one store transaction: a log_batch
# costs the embedded SQLite store ~5 ms of CPU, a logging step every 10 train steps ~1 ms.
SEND_INTERVAL = 1.0


def is_chief() -> bool:
    """Whether this process is the one that logs: the chief, or worker 0 when there is none.

    Read from ``TF_CONFIG`` (what ``MultiWorkerMirroredStrategy`` reads);
    without it there is one process, and it logs.
    """
    config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if not cluster or not task:
        return True
    if task.get("type") == "chief":
        return True
    return "chief" not in cluster and task.get("type") == "worker" and int(task.get("index", 0)) == 0


class MLflowTracking(keras.callbacks.Callback):
    """Track a Keras training run in MLflow: parameters, metrics, artifacts, final status.

    MLflow's own ``MlflowCallback`` logs the optimizer's top-level config, a
    summary and metrics, puts validation metrics at step 0 (mlflow#14293) and
    leaves a crashed run RUNNING. This one records, for every run alike:

    - **where**: MLflow's conventions (:mod:`keras_optsuite.callbacks._run_target`).
      Inside ``with mlflow.start_run():`` the fit logs into that run and
      leaves ending it to its owner (no end status, no exit hooks), unless
      ``nested=True`` or ``parent_run_id`` asks for a child run. The
      experiment is ``experiment``, else the parent's or active run's, else
      ``mlflow.set_experiment``'s, else ``MLFLOW_EXPERIMENT_NAME`` /
      ``MLFLOW_EXPERIMENT_ID``, else ``keras-optsuite``. A new run gets the
      context tags ``mlflow.start_run`` would set (user, source, git commit).
      MLflow's process-wide state is read, never changed.
    - **params**: fit settings (``fit.*``: epochs, batch size, steps per
      epoch, validation split or data and sizes, shuffle, initial epoch,
      class and sample weights); the loss, metrics and other compile
      arguments (``compile.*``); the optimizer's full config,
      flattened with dotted keys, wrapped optimizers and learning-rate
      schedules included (``optimizer.*``); trainable and non-trainable
      parameter counts; the rates of keras-optsuite regularization layers
      (``regularization.<layer>.<attribute>``); the distribution strategy and
      replica count; ``seed``; the versions of Python, TensorFlow, Keras,
      keras-optsuite and MLflow; the git commit of the working directory (also
      the ``mlflow.source.git.commit`` tag). Keys naming credentials
      (password, token, key, secret) are logged as ``<redacted>``. Numbers
      read as written (Keras's float32 ``0.0010000000474974513`` is logged
      ``0.001``); options left unset (None) are omitted.
    - **metrics**, all on one step axis, the optimizer step: every epoch's
      training and validation metrics at the step that ends the epoch,
      with ``epoch`` (epochs completed) beside them; every ``log_every_n_steps``
      optimizer steps, the batch metrics as ``batch.<name>``, the learning
      rate applied at that step, ``gradient_norm`` (the L2 norm of the
      gradient summed across replicas, as the optimizer receives it),
      ``update_norm`` (the L2 norm of the change of all trainable weights
      over that step) and ``update_to_weight_ratio``, the step size of
      learning-rate-free optimizers (``estimated_step_size``) and the steps
      skipped by ``SkipNonFinite`` (``skipped_steps``), at
      ``step = optimizer iterations``.
    - **artifacts**: ``model/final.keras`` and ``model/best.keras`` (by
      ``monitor``: the best epoch's weights and optimizer state are kept in
      memory and written once, when the run ends, however it ends; with
      ``backup_dir``, on disk at every improving epoch), ``model_summary.txt``, ``history.csv``,
      ``learning_curves.png``, ``optimizer.json``; the training data's digest
      and shape through ``log_input`` when ``training_data`` is given. When
      the run ends FINISHED, the final and best models are also MLflow
      logged models named ``final`` and ``best`` (signature and input
      example from ``training_data``'s first rows, else zeros of the
      model's input shape; loadable with ``mlflow.keras.load_model``).

    Only the chief logs under ``MultiWorkerMirroredStrategy`` (the logs Keras
    hands to callbacks are already reduced across replicas and workers).

    **Resume.** Give the ``backup_dir`` of a ``keras.callbacks.BackupAndRestore``
    used in the same ``fit``: a job killed (even with ``kill -9``) and started
    again continues the same MLflow run (status back to RUNNING, tag
    ``keras_optsuite.resumes``). Steps continue from the restored optimizer
    iterations and epoch; a step that the killed job already logged is not
    logged again (the first measurement stays), so every step appears once.
    The run id, the epoch history and the best model wait in
    ``<backup_dir>.mlflow-run/``, deleted when the run ends FINISHED.

    **Outage.** Records go through an asynchronous sink that batches them
    (sent at least every second, and at every flush);
    while the tracking server does not answer they are spooled to a journal
    on disk and replayed in order when it answers again (``optsuite
    tracking replay`` sends what is left). If it does not answer when
    training starts, training goes on: a note on stderr names the server
    and the journal, the run has a pending id (``run_id`` is
    ``pending-<hex>`` until the run is created, then the real id) and is
    created, once, when the journal is replayed. Artifacts that cannot be
    uploaded at the end are copied beside the journal
    (``unsent-artifacts/<run_id>/``) and uploaded by the replay; MLflow
    logged models are then skipped (the ``.keras`` files are kept). ``fit``
    never waits on the server more than ``flush_timeout`` seconds at the end.

    The run ends FINISHED when training ends, KILLED on ``SIGTERM`` or
    ``KeyboardInterrupt``, and FAILED (with the traceback saved as
    ``traceback.txt``) when training raises. Keras does not tell callbacks
    about exceptions, so use the callback as a context manager around
    ``fit`` to end the run at once; without it, an exception that ends the
    process still ends the run FAILED (from ``sys.excepthook`` and
    ``atexit``).

    Args:
        experiment: the MLflow experiment name (created if missing); None
            resolves it as MLflow does (see above), falling back to
            `"keras-optsuite"`. Defaults to `None`.
        run_name: the run's name, or None for MLflow's generated one.
        tags: extra tags for the run.
        tracking_uri: where to log; None uses the active run's store, else
            MLflow's (``mlflow.set_tracking_uri``, ``MLFLOW_TRACKING_URI``),
            else the embedded store ``sqlite:///mlruns/mlflow.db``
            (artifacts in ``mlruns/``).
        log_every_n_steps: how often batch metrics and telemetry are logged,
            >= 1. Defaults to `10`.
        monitor: the epoch metric that picks the best model. Defaults to
            `"val_loss"` (`"loss"` when there is no validation).
        mode: ``"min"``, ``"max"`` or ``"auto"`` (the rule of
            :func:`keras_optsuite.callbacks.compare.lower_is_better`).
        training_data: ``x`` or ``(x, y)`` NumPy arrays to record with
            ``log_input`` (digest and shape).
        seed: the seed used, logged as a param.
        journal_path: the file unsent records are spooled to. Defaults to
            one journal per tracking store under ``mlruns/journals/`` (what
            ``optsuite tracking replay`` reads).
        flush_timeout: the longest ``fit`` waits for the sink at the end, in
            seconds. Defaults to `10.0`.
        backup_dir: the ``backup_dir`` of the ``BackupAndRestore`` callback
            of the same ``fit``, to continue the run after a restart; None
            starts a new run every time. Defaults to `None`.
        log_model: log the final and best models as MLflow logged models
            when the run ends FINISHED (about 0.07 s of CPU each for a small
            model). Defaults to `True`.
        nested: inside an active run, make a child run of it instead of
            logging into it. Defaults to `False`.
        parent_run_id: make the run a child of this run (tag
            ``mlflow.parentRunId``, in the parent's experiment unless
            ``experiment`` is given); a pending id of a parent started
            offline works too (the replay creates the parent first).
            Defaults to `None`.

    Example:
    >>> with MLflowTracking(experiment="digits", run_name="radam") as tracking:
    ...     model.fit(x, y, validation_split=0.2, epochs=10, callbacks=[tracking])
    """

    def __init__(
        self,
        experiment: str | None = None,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
        tracking_uri: str | None = None,
        log_every_n_steps: int = 10,
        monitor: str = "val_loss",
        mode: str = "auto",
        training_data: Any = None,
        seed: int | None = None,
        journal_path: str | os.PathLike | None = None,
        flush_timeout: float = 10.0,
        backup_dir: str | os.PathLike | None = None,
        log_model: bool = True,
        nested: bool = False,
        parent_run_id: str | None = None,
    ) -> None:
        super().__init__()
        if experiment is not None and (not isinstance(experiment, str) or not experiment.strip()):
            raise ValueError(f"experiment must be a non-empty string or None, got experiment={experiment!r}")
        if parent_run_id is not None and (not isinstance(parent_run_id, str) or not parent_run_id.strip()):
            raise ValueError(f"parent_run_id must be a run id or None, got parent_run_id={parent_run_id!r}")
        if not isinstance(nested, bool):
            raise ValueError(f"nested must be True or False, got nested={nested!r}")
        if nested and parent_run_id is not None:
            raise ValueError(
                f"give nested=True (a child of the active run) or parent_run_id (a child of that run), "
                f"not both: got nested=True, parent_run_id={parent_run_id!r}"
            )
        self.experiment = experiment
        self.nested = nested
        self.parent_run_id = parent_run_id
        self.run_name = run_name
        self.tags = dict(tags or {})
        self.tracking_uri = tracking_uri
        self.log_every_n_steps = check_positive_int("log_every_n_steps", log_every_n_steps)
        self.monitor = monitor
        self.mode = check_choice("mode", mode, MODES)
        self.training_data = training_data
        self.seed = seed
        self.journal_path = journal_path
        self.flush_timeout = float(flush_timeout)
        self.backup_dir = backup_dir
        self._resume_state = RunState(backup_dir) if backup_dir is not None else None
        self.log_model = bool(log_model)
        self._run_id: str | None = None
        self._owns_run = True  # False while logging into a run someone else started (and ends)
        self._creation: dict[str, Any] | None = None  # how a pending run is to be created
        self._journal: Journal | None = None
        self._tracking_uri: str | None = None
        self._experiment_id: str | None = None
        self._last_steps: dict[str, int] = {}
        self._resumes = 0
        self._best_step = 0
        # The learning rate, norms and counters of logging steps, computed in the compiled step
        # (callbacks/_step_telemetry.py); None without an optimizer.
        self._telemetry: StepTelemetry | None = None
        self._swapped = False  # the logging train function runs this batch
        self._recorded_through = -1  # the last step whose record was read
        # The optimizer step is counted in Python between reads of the device counter (one per
        # epoch, plus the one telemetry read per logged step): steps that log nothing cost no round trip.
        self._steps_before_epoch: int | None = None
        self._client: Any = None
        self._sink: Sink | None = None
        self._active = False
        self._ended = False
        self._history: list[dict[str, float]] = []
        self._best: float | None = None
        self._directory: Path | None = None
        self._temporary: tempfile.TemporaryDirectory | None = None
        # Without a backup_dir the best epoch's weights and optimizer state wait in memory and
        # best.keras is written once, when the run ends (however it ends, hooks included).
        self._best_state: tuple[list[np.ndarray], list[np.ndarray]] | None = None
        # Process-wide on purpose, and only while a run is open (installed
        # when it starts, removed when it ends).
        self._process_hooks = ProcessHooks(self._on_uncaught, self._at_exit, self._on_sigterm)
        self._failure: str | None = None

    @property
    def run_id(self) -> str | None:
        """The MLflow run id; ``pending-<hex>`` while a run started offline is not created yet."""
        if self._run_id is not None and self._journal is not None and is_pending_run_id(self._run_id):
            return self._journal.runs.get(self._run_id) or self._run_id
        return self._run_id

    # -- context manager: ends the run on any exception ----------------------------------
    def __enter__(self) -> MLflowTracking:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Literal[False]:
        if exc_type is None or not self._active:
            return False
        if issubclass(exc_type, KeyboardInterrupt):
            self._end("KILLED")
        else:
            self._end("FAILED", "".join(traceback.format_exception(exc_type, exc, tb)))
        return False

    # -- lifecycle -----------------------------------------------------------
    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._active:  # a run left open by an earlier fit that raised
            self._end("FAILED", self._failure or "training stopped without reaching on_train_end")
        self._install_telemetry()  # on every worker: the same graphs everywhere
        if not is_chief():
            self._active = False
            return
        # Everything that can fail on bad input (the URI, the experiment, the
        # parent) is resolved before anything is opened: a mistake fails here,
        # once, with MLflow's own message, and leaves nothing to clean up.
        target = resolve_target(self.tracking_uri, self.experiment, self.nested, self.parent_run_id)
        self._ended = False
        self._history, self._best, self._best_step = [], None, 0
        self._last_steps, self._resumes = {}, 0
        self._best_state = None
        self._run_id = self._creation = None
        self._experiment_id = target.experiment_id
        self._owns_run = target.attach_to is None
        uri = self._tracking_uri = target.tracking_uri
        self._client = target.client
        journal_path = Path(self.journal_path) if self.journal_path else default_journal_path(uri)
        journal = self._journal = Journal(journal_path, tracking_uri=uri)
        online = server_is_reachable(uri)
        saved = self._resume_state.load() if self._resume_state is not None else None
        if saved is not None and saved.get("tracking_uri") != uri:
            warnings.warn(
                f"{self._resume_state.directory} belongs to a run in {saved.get('tracking_uri')}, "
                f"not {uri}: starting a new run",
                stacklevel=2,
            )
            saved = None
        if target.attach_to is not None:
            resumed = False
            self._run_id = target.attach_to
            if saved is not None and saved.get("run_id") == target.attach_to and online:
                self._restore(saved)  # a restarted job: the steps it logged are not logged again
                self._last_steps = _logged_steps(self._client, self._run_id)
        else:
            resumed = saved is not None and (
                self._reattach(saved, journal) if online else self._continue_offline(saved, journal)
            )
        commit = _run_params.git_commit()
        if target.attach_to is None and not resumed:
            tags = _run_params.context_tags(self.tags)
            if commit:
                tags["mlflow.source.git.commit"] = commit
            if target.parent_run_id is not None:
                tags["mlflow.parentRunId"] = target.parent_run_id  # the pending id, if so: mapped on creation
            if online:
                online = self._create_run(target, tags)
            if not online:
                self._creation = {
                    "experiment": target.experiment,
                    "parent_run_id": target.parent_run_id,
                    "run_name": self.run_name,
                    "tags": tags,
                    "start_time": int(time.time() * 1000),
                }
        self._sink = Sink(self._client, journal, self.flush_timeout, send_interval=SEND_INTERVAL)
        if self._creation is not None:  # first in the queue: every record of the run follows it
            self._run_id = self._sink.create_run(**self._creation, run_id=self._run_id)
        if not online:
            created = "the run is created and " if is_pending_run_id(self._run_id) else ""
            print(
                f"MLflowTracking: the MLflow tracking server at {uri} does not answer; training goes "
                f"on and the records of run {self._run_id} are journaled in {journal.path}; "
                f"{created}they are sent when the server answers again, or by `optsuite tracking replay`",
                file=sys.stderr,
            )
        if self._resume_state is not None:
            self._directory, self._temporary = self._resume_state.directory, None
            self._directory.mkdir(parents=True, exist_ok=True)
        else:
            self._temporary = tempfile.TemporaryDirectory(prefix="optsuite-run-")
            self._directory = Path(self._temporary.name)
        self._active = True
        if resumed:
            self._sink.set_tags(self._run_id, {"keras_optsuite.resumes": str(self._resumes)})
        else:
            self._sink.log_params(self._run_id, self._new_params(self._params(commit), online))
            self._log_input()
        self._save_resume_state()
        if self._owns_run:  # a run someone else started is theirs to end
            self._process_hooks.install()

    def _create_run(self, target: _Target, tags: dict[str, str]) -> bool:
        """Create the run now; False (to create it offline) if the server stopped answering meanwhile."""
        try:
            experiment_id = target.experiment_id or get_or_create_experiment(self._client, target.experiment)
            run = self._client.create_run(experiment_id, run_name=self.run_name, tags=tags)
        except Exception:
            if server_is_reachable(self._tracking_uri):
                raise
            return False
        self._run_id, self._experiment_id = run.info.run_id, experiment_id
        return True

    def _new_params(self, params: dict[str, str], online: bool) -> dict[str, str]:
        """``params`` less those the run already has; a changed value is dropped with a warning.

        Only a run this callback did not create (an active run it logs into)
        can hold params already: MLflow refuses to change a logged param, so
        a second fit's different settings are not logged.
        """
        if self._owns_run or not online:
            return params
        existing = self._client.get_run(self._run_id).data.params
        changed = sorted(key for key, value in params.items() if key in existing and existing[key] != value)
        if changed:
            warnings.warn(
                f"run {self._run_id} already has params {', '.join(changed)} with other values; "
                "MLflow params cannot change, so this fit's values are not logged",
                stacklevel=3,
            )
        return {key: value for key, value in params.items() if key not in existing}

    def _reattach(self, saved: Mapping[str, Any], journal: Journal) -> bool:
        """Continue the run of ``saved``: False (with a warning) when it is gone."""
        from mlflow.exceptions import MlflowException

        # A stale record (a KILLED terminate from the previous process) must
        # reach the store before the run is set RUNNING again; replaying also
        # creates a run the previous process started offline.
        with fail_fast_http():
            _, remaining = journal.replay(self._client)
        run_id = journal.runs.get(saved["run_id"])
        if remaining:
            warnings.warn(
                f"{remaining} records in {journal.path} are not taken by {self._tracking_uri} yet; "
                f"run {saved['run_id']} continues behind them",
                stacklevel=3,
            )
        if remaining or run_id is None:  # or a pending run whose creation never reached the journal
            return self._continue_offline(saved, journal)
        try:
            run = self._client.get_run(run_id)
        except MlflowException as error:
            warnings.warn(f"cannot resume run {run_id} ({error}): starting a new run", stacklevel=3)
            return False
        if run.info.lifecycle_stage != "active":
            warnings.warn(f"run {run_id} was deleted: starting a new run", stacklevel=3)
            return False
        self._run_id, self._experiment_id = run_id, run.info.experiment_id
        self._last_steps = _logged_steps(self._client, run_id)
        self._client.update_run(run_id, status="RUNNING")
        self._restore(saved)
        return True

    def _continue_offline(self, saved: Mapping[str, Any], journal: Journal) -> bool:
        """Continue the run of ``saved`` without the store: its records queue behind the journal's.

        The steps already logged are those saved at the last epoch's end and
        those waiting in the journal. A run created offline is queued for
        creation again (it is created once). Its status stays what the
        previous process left (e.g. KILLED) until this one ends it.
        """
        run_id = journal.runs.get(saved["run_id"]) or saved["run_id"]
        if is_pending_run_id(run_id):
            creation = saved.get("create_run")
            if not isinstance(creation, dict):
                return False
            self._creation = {
                key: creation.get(key) for key in ("experiment", "parent_run_id", "run_name", "tags", "start_time")
            }
        self._run_id, self._experiment_id = run_id, saved.get("experiment_id")
        self._last_steps = {str(k): int(v) for k, v in (saved.get("last_steps") or {}).items()}
        ids = {run_id, saved["run_id"], saved.get("record_run_id")}  # a pending id, even once created
        for record in journal.pending():
            if record["kind"] == "metrics" and record["run_id"] in ids:
                for key, _, _, step in record["metrics"]:
                    self._last_steps[key] = max(step, self._last_steps.get(key, step))
        self._restore(saved)
        return True

    def _restore(self, saved: Mapping[str, Any]) -> None:
        self._history = [dict(row) for row in saved.get("history", [])]
        self._best, self._best_step = saved.get("best"), int(saved.get("best_step", 0))
        self._resumes = int(saved.get("resumes", 0)) + 1

    def _save_resume_state(self) -> None:
        if self._resume_state is None:
            return
        run_id = self.run_id
        self._resume_state.save({
            "run_id": run_id,
            "record_run_id": self._run_id,
            "tracking_uri": self._tracking_uri,
            "experiment_id": self._experiment_id,
            "history": self._history,
            "best": self._best,
            "best_step": self._best_step,
            "resumes": self._resumes,
            "last_steps": self._last_steps,
            "create_run": self._creation if is_pending_run_id(run_id) else None,
        })  # fmt: skip

    def _install_telemetry(self) -> None:
        self._steps_before_epoch = None  # BackupAndRestore may restore the counter after this
        self._swapped, self._recorded_through = False, -1
        if getattr(self.model, "optimizer", None) is None:
            self._telemetry = None
            return
        self._telemetry = StepTelemetry.of(self.model, self.log_every_n_steps)
        self._telemetry.reset()

    def _swap_out(self) -> None:
        """Keras's own train function back in the model, whatever happened during the step."""
        self._swapped = False
        if self._telemetry is not None:
            self._telemetry.swap_out(self.model)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._swap_out()
        if self._active and not self._ended:
            self._end("FINISHED")

    def _end(self, status: str, failure: str | None = None) -> None:
        """Log the artifacts, end the run with ``status``, flush (bounded)."""
        self._ended, self._active = True, False
        self._swap_out()
        self._process_hooks.remove()
        try:
            if is_pending_run_id(self.run_id):
                self._sink.flush(self.flush_timeout)  # creates the run if the server answers now
            with fail_fast_http():  # a stopped server must not hold the exit for minutes
                self._log_artifacts(failure, logged_models=status == "FINISHED" and self.log_model)
        finally:
            if self._owns_run:
                self._sink.terminate(self._run_id, status)
            self._sink.flush(self.flush_timeout)
            self._sink.close()
            if self._temporary is not None:
                self._temporary.cleanup()
            elif status == "FINISHED":
                self._resume_state.clear()

    # -- params --------------------------------------------------------------
    def _params(self, commit: str | None) -> dict[str, str]:
        from keras_optsuite.layers import rates

        model = self.model
        params = {"fit.epochs": str(self.params.get("epochs"))}
        fit = _run_params.fit_settings(model)
        if fit is None and self.params.get("steps") is not None:  # not called from Keras's fit
            fit = {"fit.steps_per_epoch": str(self.params["steps"])}
        params.update(fit or {})
        params.update(_run_params.compile_settings(model))
        optimizer = getattr(model, "optimizer", None)
        if optimizer is not None:
            params.update(_run_params.flatten(keras.optimizers.serialize(optimizer), "optimizer"))
        params.update(_run_params.parameter_counts(model))
        params.update({f"regularization.{key}": str(value) for key, value in rates(model).items()})
        params.update(_run_params.distribution(model.distribute_strategy))
        params.update(_run_params.versions())
        if self.seed is not None:
            params["seed"] = str(self.seed)
        if commit:
            params["git.commit"] = commit
        return params

    def _log_input(self) -> None:
        if self.training_data is None:
            return
        from mlflow.data.numpy_dataset import from_numpy
        from mlflow.entities import DatasetInput, InputTag

        x, y = self.training_data if isinstance(self.training_data, tuple) else (self.training_data, None)
        dataset = from_numpy(np.asarray(x), targets=None if y is None else np.asarray(y), name="training")
        entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")])
        self._sink.log_inputs(self._run_id, [entity])

    # -- metrics -------------------------------------------------------------
    def _iterations(self) -> int:
        return int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

    def _logging_step(self, step: int) -> bool:
        return step % self.log_every_n_steps == 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        # The first epoch reads the counter after every on_train_begin (BackupAndRestore has restored
        # it by then); the next ones start where the last epoch's end read it.
        if self._telemetry is not None and self._steps_before_epoch is None:
            self._steps_before_epoch = self._iterations()

    def _counted_step(self, batch: int) -> int:
        """The optimizer step after ``batch`` of this epoch, counted without reading the device."""
        if self._steps_before_epoch is None:  # batch hooks called outside Keras's epoch loop
            self._steps_before_epoch = self._iterations() - batch
        return self._steps_before_epoch + batch + 1

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        # On every worker (not only the one that logs): all run the same train functions.
        if self._telemetry is None:
            return
        first = self._counted_step(batch)
        last = first + max(int(getattr(self.model, "steps_per_execution", 1) or 1), 1) - 1
        if last // self.log_every_n_steps > (first - 1) // self.log_every_n_steps:  # a step that logs
            self._telemetry.swap_in(self.model)
            self._swapped = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if not self._swapped:
            return
        self._swap_out()
        record = self._telemetry.read()  # one transfer: the counter and the logging step's values
        recorded = record["step"]
        if np.isfinite(recorded) and recorded > self._recorded_through:
            step = self._recorded_through = int(recorded)
            iterations = int(record["iterations"])
        else:
            # No step of this call logs: a loss-scale optimizer skipped a non-finite step, so the
            # counter did not move and the Python count is one ahead (or the logging function did
            # not run: a callback replaced the train function). The device counter says.
            step = iterations = self._iterations()
            record = None
        self._steps_before_epoch = iterations - batch - 1
        if not self._active or not self._logging_step(step):
            return
        values = {f"batch.{key}": value for key, value in (logs or {}).items()}
        if record is not None:
            values.update(step_metrics(record))
        values.update(_estimated_step_size(self.model.optimizer))
        self._log_metrics(values, step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self._telemetry is None and not self._active:
            return
        # The counter, read once: the next epoch's batches are counted from it.
        step = self._steps_before_epoch = self._iterations()
        if not self._active:
            return
        logs = dict(logs or {})
        completed = epoch + 1  # Keras's "Epoch 1/n" ends here
        if all(row["epoch"] != completed for row in self._history):  # a resumed job may redo an epoch
            self._history.append({"epoch": completed, "step": step, **{k: float(v) for k, v in logs.items()}})
        # One x-axis for every metric: the optimizer step, where the batch
        # metrics and telemetry are too; `epoch` beside them for the UI.
        self._log_metrics({**logs, "epoch": completed}, step)
        self._save_if_best(logs, step)
        if self._resume_state is not None:
            # Durable before the epoch counts as done: a kill -9 after this epoch's backup
            # would otherwise lose the records still queued in memory (bounded by flush_timeout;
            # an unreachable store spools them to the journal).
            self._sink.flush(self.flush_timeout)
        self._save_resume_state()

    def _log_metrics(self, values: Mapping[str, Any], step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        metrics = []
        for key, value in values.items():
            if step <= self._last_steps.get(key, -1):
                continue  # logged by the job this one resumes: the first measurement stays
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            metrics.append(Metric(key=key, value=number, timestamp=timestamp, step=int(step)))
            self._last_steps[key] = int(step)
        if metrics:
            self._sink.log_metrics(self._run_id, metrics)

    # -- best model ----------------------------------------------------------
    def _monitored(self, logs: Mapping[str, Any]) -> str | None:
        if self.monitor in logs:
            return self.monitor
        return "loss" if self.monitor == "val_loss" and "loss" in logs else None

    def _save_if_best(self, logs: Mapping[str, Any], step: int) -> None:
        key = self._monitored(logs)
        if key is None:
            if not self._history[:-1]:  # said once, at the first epoch (as ModelCheckpoint warns)
                warnings.warn(
                    f"MLflowTracking: monitor={self.monitor!r} is not an epoch metric of this fit "
                    f"({', '.join(sorted(logs)) or 'none'}): no best model is saved; pass one of them",
                    stacklevel=2,
                )
            return
        value = float(logs[key])
        mode = self.mode
        if mode == "auto":
            mode = "min" if lower_is_better(key) else "max"
        better = self._best is None or (value < self._best if mode == "min" else value > self._best)
        if better and np.isfinite(value):
            self._best, self._best_step = value, step
            if self._resume_state is not None:  # on disk at once: a kill -9 must not lose it
                self.model.save(self._directory / "best.keras")
            else:
                self._best_state = (
                    [_host_copy(w) for w in self.model.weights],
                    [_host_copy(v) for v in self._optimizer_variables()],
                )

    def _optimizer_variables(self) -> list[Any]:
        optimizer = getattr(self.model, "optimizer", None)
        return list(optimizer.variables) if optimizer is not None else []

    @contextlib.contextmanager
    def _best_weights(self) -> Iterator[None]:
        """The model holds the best epoch's weights and optimizer state inside, its own after."""
        weights, slots = self._best_state
        variables = list(self.model.weights) + self._optimizer_variables()
        current = [_host_copy(v) for v in variables]
        try:
            for variable, value in zip(variables, weights + slots):
                variable.assign(value)
            yield
        finally:
            for variable, value in zip(variables, current):
                variable.assign(value)

    def _write_best_model(self, path: Path) -> bool:
        """best.keras from the weights kept in memory; False if none are (no best, or on disk already)."""
        if self._best_state is None:
            return False
        with self._best_weights():
            self.model.save(path)
        return True

    # -- artifacts -----------------------------------------------------------
    def _log_artifacts(self, failure: str | None, logged_models: bool) -> None:
        directory = self._directory
        files: list[tuple[Path, str | None]] = []
        if failure:
            (directory / "traceback.txt").write_text(failure)
            files.append((directory / "traceback.txt", None))
        try:
            self.model.save(directory / "final.keras")
            files.append((directory / "final.keras", "model"))
        except Exception as error:  # noqa: BLE001 - a model that cannot be saved must not hide the status
            (directory / "final_model_error.txt").write_text(repr(error))
            files.append((directory / "final_model_error.txt", "model"))
        try:
            self._write_best_model(directory / "best.keras")
        except Exception as error:  # noqa: BLE001 - as for the final model
            (directory / "best_model_error.txt").write_text(repr(error))
            files.append((directory / "best_model_error.txt", "model"))
        if (directory / "best.keras").exists():
            files.append((directory / "best.keras", "model"))
        summary = io.StringIO()
        self.model.summary(print_fn=lambda line, **_: summary.write(line + "\n"))
        (directory / "model_summary.txt").write_text(summary.getvalue())
        files.append((directory / "model_summary.txt", None))
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None:
            (directory / "optimizer.json").write_text(
                json.dumps(keras.optimizers.serialize(optimizer), indent=2, default=str)
            )
            files.append((directory / "optimizer.json", None))
        if self._history:
            _write_history(self._history, directory / "history.csv")
            files.append((directory / "history.csv", None))
            _plot_history(self._history, directory / "learning_curves.png")
            files.append((directory / "learning_curves.png", None))
        run_id = self.run_id
        uploading = not is_pending_run_id(run_id)
        reason = f"the run is not created yet: {self._tracking_uri} does not answer"
        kept: Path | None = None
        for path, artifact_path in files:
            if uploading:
                try:
                    self._client.log_artifact(run_id, str(path), artifact_path)
                    continue
                except Exception as error:  # noqa: BLE001 - the server may be down: keep a local copy
                    uploading, reason = False, f"upload failed: {error}"
            if kept is None:
                kept = self._journal.new_artifacts_directory(run_id)
            (kept / (artifact_path or "")).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, kept / (artifact_path or "") / path.name)
        if kept is not None:  # before the terminate record: the replay uploads them first
            self._sink.log_artifacts(run_id, kept)
            print(
                f"MLflowTracking: artifacts not uploaded ({reason}); kept in {kept} and journaled: "
                "uploaded when the journal is replayed",
                file=sys.stderr,
            )
        if logged_models and uploading:
            self._log_models(directory)
        elif logged_models:
            print(
                "MLflowTracking: no MLflow logged models (the tracking server does not answer); "
                "model/final.keras and model/best.keras are journaled",
                file=sys.stderr,
            )

    def _log_models(self, directory: Path) -> None:
        """The final and best models as MLflow logged models (skipped, with a note, if impossible)."""
        example = input_example(self.model, self.training_data)
        if example is None:
            print(
                "MLflowTracking: no MLflow logged model (the model has several inputs or no known "
                "input shape; pass training_data); model/final.keras is logged",
                file=sys.stderr,
            )
            return
        if self._experiment_id is None:  # a run created from the journal
            try:
                self._experiment_id = self._client.get_run(self.run_id).info.experiment_id
            except Exception as error:  # noqa: BLE001
                print(f"MLflowTracking: no MLflow logged models: {error!r}", file=sys.stderr)
                return
        # The models are linked to the run's metrics at their step, read back from the store: the
        # records still waiting in the sink (up to a second's worth) must be there first.
        self._sink.flush(self.flush_timeout)
        self._log_model("final", example, self._iterations())
        if self._best_state is not None:  # in memory: logged from the model itself, not reloaded
            self._log_model("best", example, self._best_step, in_memory=True)
        elif (directory / "best.keras").exists():
            self._log_model("best", example, self._best_step, path=directory / "best.keras")

    def _log_model(self, name: str, example: np.ndarray, step: int, path: Path | None = None,
                   in_memory: bool = False) -> None:
        """One MLflow logged model: this model, its best weights, or the ``.keras`` file at ``path``."""
        try:
            with self._best_weights() if in_memory else contextlib.nullcontext():
                model = keras.models.load_model(path) if path is not None else self.model
                log_keras_model(self._client, self.run_id, self._experiment_id, model, name, example, step)
        except Exception as error:  # noqa: BLE001 - the .keras files are logged; say what failed
            print(f"MLflowTracking: could not log the MLflow model {name!r}: {error!r}", file=sys.stderr)

    # -- process hooks (callbacks/_process_hooks.py): never leave a run RUNNING -------
    def _on_uncaught(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._failure = "".join(traceback.format_exception(exc_type, exc, tb))
        if self._active:
            interrupted = issubclass(exc_type, KeyboardInterrupt)
            self._end("KILLED" if interrupted else "FAILED", self._failure)

    def _at_exit(self) -> None:
        if self._active:
            self._end("FAILED", self._failure or "the process exited during training")

    def _on_sigterm(self) -> None:
        if self._active:
            self._end("KILLED")


def _host_copy(variable: Any) -> np.ndarray:
    """The variable's value now, as a NumPy array later assignments do not change.

    TensorFlow's ``.numpy()`` hands over the tensor it read (an assignment
    copies the variable's buffer before changing it, so the array keeps the
    old value): cheaper than ``np.array(variable)``, which copies again.
    """
    value = getattr(variable, "value", variable)
    return value.numpy() if hasattr(value, "numpy") else np.array(value)


def _estimated_step_size(optimizer: Any) -> dict[str, float]:
    """The step size of a learning-rate-free optimizer (read on the host: the optimizer computes it there)."""
    from keras_optsuite.optimizers._base import LearningRateFree
    from keras_optsuite.optimizers._wrapper import iter_optimizers

    values = {}
    for inner in iter_optimizers(optimizer):
        if isinstance(inner, LearningRateFree):
            values["estimated_step_size"] = float(inner.estimated_step_size)
    return values


def _write_history(history: list[dict[str, float]], path: Path) -> None:
    columns = ["epoch", "step"] + sorted({key for row in history for key in row} - {"epoch", "step"})
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def _plot_history(history: list[dict[str, float]], path: Path) -> None:
    """Training and validation curves per metric, at integer epochs.

    Drawn on matplotlib's Agg canvas directly: no pyplot, so the user's
    backend and open figures are left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = sorted({key for row in history for key in row} - {"epoch", "step"})
    bases = [name for name in names if not name.startswith("val_")]
    columns = max(len(bases), 1)
    figure = Figure(figsize=(4.5 * columns, 3.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, columns, squeeze=False)
    for axis, base in zip(axes[0], bases):
        for name in (base, f"val_{base}"):
            points = [(row["epoch"], row[name]) for row in history if name in row]
            if points:
                axis.plot(*zip(*points), marker="o", label=name)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_xlabel("epoch")
        axis.set_title(base)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
