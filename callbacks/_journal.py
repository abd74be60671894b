"""Nothing lost when the tracking store is down: a journal on disk and an asynchronous sink.

:class:`Journal` is an append-only JSON-lines spool. Each line is one record::

    {"kind": "metrics", "run_id": "...", "metrics": [[key, value, timestamp_ms, step], ...]}
    {"kind": "params", "run_id": "...", "params": {"key": "value", ...}}
    {"kind": "tags", "run_id": "...", "tags": {"key": "value", ...}}
    {"kind": "terminate", "run_id": "...", "status": "FINISHED", "end_time": 1700000000000}
    {"kind": "create_run", "run_id": "pending-<hex>", "experiment": "name", "run_name": null,
     "tags": {...}, "start_time": 1700000000000, "parent_run_id": "..."}  (parent optional)
    {"kind": "artifacts", "run_id": "...", "directory": "/abs/kept/copy", "artifact_path": null}
    {"kind": "inputs", "run_id": "...", "datasets": [{"name": ..., "digest": ..., "source_type": ...,
     "source": ..., "schema": ..., "profile": ..., "context": "training"}]}

A run can be started while the store is unreachable: ``create_run`` names it
with a *pending* id (``pending-<hex>``) that later records use too. Sending
it creates the run (or finds the one an earlier, interrupted send created: it
carries the tag ``keras_optsuite.provisional_run_id``) and records which real
id the pending id became in ``<journal>.runs`` (fsync'd, replaced
atomically); every later record of a pending id goes to that real run. A
record whose pending id has no real run is refused for good. ``artifacts``
uploads a kept local copy (``client.log_artifacts``), then deletes it; a copy
that is gone was uploaded before a crash. ``inputs`` logs datasets
(``client.log_inputs``; logging the same dataset again adds nothing).

Appends are fsync'd; a line torn by ``kill -9`` is ignored on read and cut
off before the next append. ``<journal>.cursor`` records how far
:meth:`Journal.replay` got, so a record is sent at most once per successful
replay; a crash between sending and writing the cursor resends, which MLflow
makes harmless: the SQL store drops a metric whose (key, timestamp, step,
value) already exists, accepts a param re-logged with the same value,
overwrites tags, and terminating twice sets the same status and end time.
Records the store rejects for good (``INVALID_PARAMETER_VALUE``, e.g. a param
whose value changed, a deleted run) go to ``<journal>.rejected`` instead of
blocking the records behind them. When everything is sent the journal is
emptied (replaced by an empty file).

:class:`Sink` is what the tracking callback calls: it enqueues and returns at
once; one background thread sends batches with ``client.log_batch`` and, when
the store is unreachable, spools to the journal and replays it (with backoff)
before anything newer.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from keras_optsuite._validation import check_non_negative, check_positive
from keras_optsuite.callbacks._store import fail_fast_http

try:  # POSIX: serialize appends/replays of the same journal across processes.
    import fcntl
except ImportError:  # pragma: no cover - Windows: in-process locking only
    fcntl = None

_logger = logging.getLogger(__name__)

RECORD_KINDS = ("metrics", "params", "tags", "terminate", "create_run", "artifacts", "inputs")
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
# Kinds sent alone, one store call each (everything else shares a log_batch).
_SINGLE_REQUEST_KINDS = frozenset({"terminate", "create_run", "artifacts", "inputs"})

PENDING_RUN_PREFIX = "pending-"
"""Run ids starting with this name a run not created yet (see :meth:`Sink.create_run`)."""

PROVISIONAL_RUN_ID_TAG = "keras_optsuite.provisional_run_id"
"""The tag by which a run created from a ``create_run`` record is found again."""

UNSENT_ARTIFACTS_DIRECTORY = "unsent-artifacts"
"""Beside the journal: local copies of artifacts waiting for upload."""

_DATASET_FIELDS = ("name", "digest", "source_type", "source")
_OPTIONAL_DATASET_FIELDS = ("schema", "profile", "context")

# MLflow's log_batch limits (mlflow.utils.validation) and a request-size margin
# under its 1 MB limit on the JSON body.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_TEXT_BYTES = 400_000

# Error codes that retrying cannot fix: the record is set aside. Everything
# else (connection errors, 5xx, RESOURCE_DOES_NOT_EXIST when pointed at the
# wrong store, auth) is treated as transient and stops the replay.
_PERMANENT_ERROR_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST"})


# ---------------------------------------------------------------------------
# Records.


def _check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got run_id={run_id!r}")
    return run_id


def _check_string_mapping(name: str, mapping: Any) -> dict[str, str]:
    if not isinstance(mapping, dict) or not all(isinstance(k, str) for k in mapping):
        raise ValueError(f"{name} must be a dict with string keys, got {name}={mapping!r}")
    return {key: str(value) for key, value in mapping.items()}


def is_pending_run_id(run_id: Any) -> bool:
    """True for a run id made by :meth:`Sink.create_run` (the run may not exist yet)."""
    return isinstance(run_id, str) and run_id.startswith(PENDING_RUN_PREFIX)


def _check_optional_string(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {name}={value!r}")
    return value


def _check_milliseconds(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (ms), got {name}={value!r}")
    return value


def _check_datasets(datasets: Any) -> list[dict[str, str | None]]:
    if not isinstance(datasets, list) or not datasets:
        raise ValueError(f"record['datasets'] must be a non-empty list, got {datasets!r}")
    normalized = []
    for dataset in datasets:
        if not isinstance(dataset, dict) or not all(
            isinstance(dataset.get(field), str) for field in _DATASET_FIELDS
        ):
            raise ValueError(
                f"record['datasets'] entries must be dicts with string {', '.join(_DATASET_FIELDS)}, "
                f"got {dataset!r}"
            )
        entry = {field: dataset[field] for field in _DATASET_FIELDS}
        for field in _OPTIONAL_DATASET_FIELDS:
            entry[field] = _check_optional_string(f"dataset {field}", dataset.get(field))
        normalized.append(entry)
    return normalized


def check_record(record: Any) -> dict:
    """Validate a journal record and return it normalized (floats, ints, strings)."""
    if not isinstance(record, dict) or record.get("kind") not in RECORD_KINDS:
        allowed = ", ".join(repr(kind) for kind in RECORD_KINDS)
        raise ValueError(f"record must be a dict with kind one of {allowed}, got record={record!r}")
    kind = record["kind"]
    run_id = _check_run_id(record.get("run_id"))
    if kind == "metrics":
        metrics = record.get("metrics")
        if not isinstance(metrics, (list, tuple)):
            raise ValueError(f"record['metrics'] must be a list, got {metrics!r}")
        normalized = []
        for entry in metrics:
            if not isinstance(entry, (list, tuple)) or len(entry) != 4:
                raise ValueError(
                    "record['metrics'] entries must be [key, value, timestamp_ms, step], "
                    f"got {entry!r}"
                )
            key, value, timestamp, step = entry
            if not isinstance(key, str):
                raise ValueError(f"metric key must be a string, got {key!r}")
            normalized.append([key, float(value), int(timestamp), int(step)])
        return {"kind": kind, "run_id": run_id, "metrics": normalized}
    if kind in ("params", "tags"):
        return {"kind": kind, "run_id": run_id, kind: _check_string_mapping(kind, record.get(kind))}
    if kind == "create_run":
        if not is_pending_run_id(run_id):
            raise ValueError(
                f"a create_run record's run_id must start with {PENDING_RUN_PREFIX!r}, got run_id={run_id!r}"
            )
        experiment = record.get("experiment")
        parent = record.get("parent_run_id")
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise ValueError(f"parent_run_id must be a run id or None, got parent_run_id={parent!r}")
        if (experiment is not None or parent is None) and (not isinstance(experiment, str) or not experiment.strip()):
            raise ValueError(
                "experiment must be a non-empty string (or None for a child run, which goes to its "
                f"parent's experiment), got experiment={experiment!r}"
            )
        normalized = {
            "kind": kind,
            "run_id": run_id,
            "experiment": experiment,
            "run_name": _check_optional_string("run_name", record.get("run_name")),
            "tags": _check_string_mapping("tags", record.get("tags", {})),
            "start_time": _check_milliseconds("start_time", record.get("start_time")),
        }
        if parent is not None:
            normalized["parent_run_id"] = parent
        return normalized
    if kind == "artifacts":
        directory = record.get("directory")
        if not isinstance(directory, str) or not os.path.isabs(directory):
            raise ValueError(f"directory must be an absolute path, got directory={directory!r}")
        artifact_path = _check_optional_string("artifact_path", record.get("artifact_path"))
        return {"kind": kind, "run_id": run_id, "directory": directory, "artifact_path": artifact_path}
    if kind == "inputs":
        return {"kind": kind, "run_id": run_id, "datasets": _check_datasets(record.get("datasets"))}
    status = record.get("status")
    if status not in TERMINAL_STATUSES:
        allowed = ", ".join(repr(s) for s in TERMINAL_STATUSES)
        raise ValueError(f"status must be one of {allowed}, got status={status!r}")
    end_time = _check_milliseconds("end_time", record.get("end_time"))
    return {"kind": kind, "run_id": run_id, "status": status, "end_time": end_time}


def _encode(record: dict) -> bytes:
    # allow_nan: a NaN or infinite metric round-trips exactly (Python's json
    # reads its own NaN/Infinity tokens), which keeps replays idempotent.
    return (json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n").encode("utf-8")


def _text_size(record: dict) -> int:
    kind = record["kind"]
    if kind == "metrics":
        return sum(len(key) + 40 for key, _, _, _ in record["metrics"])
    if kind in ("params", "tags"):
        return sum(len(key) + len(value) + 20 for key, value in record[kind].items())
    return 50


def _entity_counts(record: dict) -> tuple[int, int, int]:
    kind = record["kind"]
    return (
        len(record["metrics"]) if kind == "metrics" else 0,
        len(record["params"]) if kind == "params" else 0,
        len(record["tags"]) if kind == "tags" else 0,
    )


def _plan_requests(records: Sequence[dict]) -> list[tuple[int, int]]:
    """Split ``records`` into ``[start, end)`` ranges, each one store request.

    Consecutive metrics/params/tags records of the same run share one
    ``log_batch`` within MLflow's limits; terminate, create_run, artifacts
    and inputs records are alone. A
    params record whose keys repeat a key already in the batch starts a new
    one, so a changed param fails alone instead of sinking its neighbours.
    """
    requests: list[tuple[int, int]] = []
    start = 0
    while start < len(records):
        if records[start]["kind"] in _SINGLE_REQUEST_KINDS:
            requests.append((start, start + 1))
            start += 1
            continue
        run_id = records[start]["run_id"]
        metrics = params = tags = size = 0
        param_keys: set[str] = set()
        end = start
        while end < len(records):
            record = records[end]
            if record["kind"] in _SINGLE_REQUEST_KINDS or record["run_id"] != run_id:
                break
            m, p, t = _entity_counts(record)
            record_size = _text_size(record)
            keys = set(record["params"]) if record["kind"] == "params" else set()
            if end > start and (
                metrics + m > MAX_METRICS_PER_BATCH
                or params + p > MAX_PARAMS_PER_BATCH
                or tags + t > MAX_TAGS_PER_BATCH
                or metrics + m + params + p + tags + t > MAX_ENTITIES_PER_BATCH
                or size + record_size > MAX_BATCH_TEXT_BYTES
                or keys & param_keys
            ):
                break
            metrics, params, tags, size = metrics + m, params + p, tags + t, size + record_size
            param_keys |= keys
            end += 1
        requests.append((start, end))
        start = end
    return requests


def _refused(message: str) -> Exception:
    """An error :func:`is_permanent_error` classifies as permanent (the record is set aside)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _real_run_id(run_id: str, runs: "PendingRuns") -> str:
    real = runs.get(run_id)
    if real is None:
        raise _refused(
            f"run {run_id} was never created: its create_run record is missing or was refused"
        )
    return real


def _create_run(client: Any, record: dict, runs: "PendingRuns") -> str:
    """Create the run of a ``create_run`` record once; return its real id.

    Idempotent across crashes and processes: under the map's lock, a known
    mapping wins; else a run of the experiment tagged with the pending id
    (created by a send that died before recording it) is adopted; only
    then is a run created.
    """
    from keras_optsuite.callbacks._store import get_or_create_experiment

    pending = record["run_id"]
    with runs.locked():
        real = runs.get(pending)
        if real is not None:
            return real
        tags = {**record["tags"], PROVISIONAL_RUN_ID_TAG: pending}
        parent = record.get("parent_run_id")
        if parent is not None:  # created (or refused) before this record: the journal keeps order
            parent = tags["mlflow.parentRunId"] = _real_run_id(parent, runs)
        if record["experiment"] is None:
            experiment_id = client.get_run(parent).info.experiment_id
        else:
            experiment = client.get_experiment_by_name(record["experiment"])
            if experiment is not None and experiment.lifecycle_stage != "active":
                raise _refused(
                    f"experiment {record['experiment']!r} is deleted: run {pending} cannot be created in it"
                )
            experiment_id = get_or_create_experiment(client, record["experiment"])
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PROVISIONAL_RUN_ID_TAG}` = '{pending}'",
            max_results=1,
        )
        if found:
            real = found[0].info.run_id
        else:
            run = client.create_run(
                experiment_id, start_time=record["start_time"], tags=tags, run_name=record["run_name"]
            )
            real = run.info.run_id
        runs.remember(pending, real)
    return real


def _upload_artifacts(client: Any, run_id: str, record: dict) -> None:
    """Upload a kept copy, then delete it; a copy that is gone was uploaded before a crash."""
    directory = Path(record["directory"])
    if not directory.is_dir():
        _logger.info("%s is gone: uploaded by an earlier replay", directory)
        return
    client.log_artifacts(run_id, str(directory), record["artifact_path"])
    shutil.rmtree(directory, ignore_errors=True)
    if directory.parent.parent.name == UNSENT_ARTIFACTS_DIRECTORY:
        with contextlib.suppress(OSError):
            directory.parent.rmdir()  # the run's folder, once its last copy is uploaded


def _log_inputs(client: Any, run_id: str, record: dict) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for entry in record["datasets"]:
        dataset = Dataset(
            entry["name"], entry["digest"], entry["source_type"], entry["source"],
            entry["schema"], entry["profile"],
        )  # fmt: skip
        tags = [InputTag("mlflow.data.context", entry["context"])] if entry["context"] else []
        inputs.append(DatasetInput(dataset, tags=tags))
    client.log_inputs(run_id, datasets=inputs)


def _send_request(client: Any, records: Sequence[dict], runs: "PendingRuns") -> None:
    """One store call for records planned together by :func:`_plan_requests`.

    A pending run id (see :meth:`Sink.create_run`) is replaced by the real
    id ``runs`` knows for it.
    """
    first = records[0]
    kind = first["kind"]
    if kind == "create_run":
        _create_run(client, first, runs)
        return
    run_id = _real_run_id(first["run_id"], runs)
    if kind == "terminate":
        client.set_terminated(run_id, status=first["status"], end_time=first["end_time"])
        return
    if kind == "artifacts":
        _upload_artifacts(client, run_id, first)
        return
    if kind == "inputs":
        _log_inputs(client, run_id, first)
        return
    from mlflow.entities import Metric, Param, RunTag

    metrics: list[Metric] = []
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    for record in records:
        if record["kind"] == "metrics":
            metrics.extend(Metric(k, value, ts, step) for k, value, ts, step in record["metrics"])
        elif record["kind"] == "params":
            params.update(record["params"])
        else:
            tags.update(record["tags"])  # later values win, as sequential calls would
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(key, value) for key, value in params.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
        synchronous=True,  # never MLflow's async queue: its failures are only logged
    )


def is_permanent_error(error: BaseException) -> bool:
    """True if the store rejected the data itself (retrying cannot help)."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, MlflowException) and error.error_code in _PERMANENT_ERROR_CODES


def _send_in_order(
    client: Any,
    records: Sequence[dict],
    runs: "PendingRuns",
    on_progress: Callable[[int, list[tuple[dict, str]]], None] | None = None,
) -> tuple[int, BaseException | None]:
    """Send ``records`` in order (pending run ids resolved by ``runs``); stop at the first transient failure.

    Returns ``(handled, error)``: the first ``handled`` records were sent or
    rejected for good; ``error`` is the transient failure that stopped the
    loop, or None. ``on_progress(handled, rejected)`` runs after each
    request with the records rejected by it (``(record, message)`` pairs).
    """
    handled = 0
    for start, end in _plan_requests(records):
        rejected: list[tuple[dict, str]] = []
        try:
            _send_request(client, records[start:end], runs)
        except Exception as error:  # noqa: BLE001 - classified below
            if not is_permanent_error(error):
                return handled, error
            if end - start == 1:
                rejected.append((records[start], str(error)))
            else:
                # Find the culprit(s): resend this request's records one by one.
                for index in range(start, end):
                    try:
                        _send_request(client, records[index : index + 1], runs)
                    except Exception as single_error:  # noqa: BLE001
                        if not is_permanent_error(single_error):
                            if on_progress is not None and index > start:
                                on_progress(index, rejected)
                            return index, single_error
                        rejected.append((records[index], str(single_error)))
        handled = end
        if on_progress is not None:
            on_progress(handled, rejected)
    return handled, None


# ---------------------------------------------------------------------------
# Journal.


def _fsync_directory(directory: Path) -> None:
    if os.name != "posix":  # pragma: no cover
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class _FileLock:
    """A reentrant lock held across threads (``RLock``) and processes (``flock`` on ``path``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._thread_lock = threading.RLock()
        self._depth = 0

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
            finally:
                os.close(fd)  # also releases the flock


class PendingRuns:
    """Which real run each pending run id became: a JSON object ``{pending: real}`` in ``path``.

    Written (fsync'd, replaced atomically) when a ``create_run`` record is
    sent, read by every process sending that journal's records (the
    training job's sink, ``optsuite tracking replay``, a restarted job).
    Entries are kept: a restarted job may still hold a pending id.

    Example:
    >>> runs = Journal("mlruns/journals/server.jsonl").runs
    >>> runs.get("pending-1f0c...")  # None until the run is created
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.locked = _FileLock(self.path.with_name(self.path.name + ".lock"))
        self._known: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"PendingRuns({str(self.path)!r})"

    def get(self, run_id: str) -> str | None:
        """The real id of ``run_id``: itself if it is not pending, None while its run does not exist."""
        if not is_pending_run_id(run_id):
            return run_id
        real = self._known.get(run_id)
        if real is None:
            real = self._read().get(run_id)
            if real is not None:
                self._known[run_id] = real
        return real

    def remember(self, pending: str, real: str) -> None:
        """Record that ``pending`` is the run ``real`` (durably, before returning)."""
        with self.locked():
            mapping = {**self._read(), pending: real}
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump(mapping, handle, indent=0)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            _fsync_directory(self.path.parent)
            self._known[pending] = real

    def _read(self) -> dict[str, str]:
        try:
            mapping = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(mapping, dict):
            return {}
        return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, str)}


class Journal:
    """An append-only JSON-lines spool of tracking records, safe against ``kill -9``.

    Files beside ``path``: ``.uri`` (the tracking store the records are
    for, credentials removed, when ``tracking_uri`` is given), ``.cursor`` (replay progress: byte offset of the
    first unsent record, tied to the journal file's inode and first line), ``.rejected``
    (records the store refused for good, with the error), ``.lock``
    (``flock`` so two processes, e.g. a training job and ``optsuite tracking
    replay``, never interleave appends or compactions), ``.runs`` (the real
    ids of pending runs, :class:`PendingRuns`) and the directory
    ``unsent-artifacts/`` (local copies waiting for upload).

    Args:
        path: the journal file (created on first append, parents too).
        tracking_uri: the store its records are for, remembered beside it
            so ``optsuite tracking replay`` needs no arguments.

    Example:
    >>> journal = Journal("mlruns/journals/server.jsonl")
    >>> journal.append(
    ...     {"kind": "metrics", "run_id": run_id, "metrics": [["loss", 0.5, 1700000000000, 0]]}
    ... )
    >>> sent, remaining = journal.replay(mlflow.MlflowClient("http://127.0.0.1:5000"))
    """

    def __init__(self, path: str | os.PathLike, tracking_uri: str | None = None) -> None:
        self.path = Path(path).expanduser().absolute()
        self.uri_path = self.path.with_name(self.path.name + ".uri")
        if tracking_uri is not None:
            self._remember_tracking_uri(tracking_uri)
        self.cursor_path = self.path.with_name(self.path.name + ".cursor")
        self.rejected_path = self.path.with_name(self.path.name + ".rejected")
        self._locked = _FileLock(self.path.with_name(self.path.name + ".lock"))
        self.runs = PendingRuns(self.path.with_name(self.path.name + ".runs"))

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    @property
    def tracking_uri(self) -> str | None:
        """The store this journal's records are for (written by its tracking callback), if known."""
        try:
            return self.uri_path.read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def _remember_tracking_uri(self, tracking_uri: str) -> None:
        """Write ``<journal>.uri`` (credentials removed) so a bare replay knows where to send."""
        from keras_optsuite.callbacks._store import without_credentials

        uri = without_credentials(tracking_uri)
        if self.tracking_uri == uri:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.uri_path.with_name(self.uri_path.name + f".{os.getpid()}.tmp")
        temporary.write_text(uri + "\n", encoding="utf-8")
        os.replace(temporary, self.uri_path)

    def new_artifacts_directory(self, run_id: str) -> Path:
        """A new empty directory for artifacts of ``run_id`` that could not be uploaded.

        ``<journal dir>/unsent-artifacts/<run_id>/<time ms>-<random>/``: one
        per ``artifacts`` record, so a record never uploads (nor deletes)
        another's files.
        """
        name = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"
        directory = self.path.parent / UNSENT_ARTIFACTS_DIRECTORY / _check_run_id(run_id) / name
        directory.mkdir(parents=True)
        return directory

    # -- writing ------------------------------------------------------------

    def append(self, record: dict) -> None:
        """Append one record durably (written and fsync'd before returning)."""
        self.extend([record])

    def extend(self, records: Iterable[dict]) -> None:
        """Append several records durably with a single fsync."""
        data = b"".join(_encode(check_record(record)) for record in records)
        if not data:
            return
        with self._locked():
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                self._cut_torn_tail(fd)
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_directory(self.path.parent)

    @staticmethod
    def _cut_torn_tail(fd: int) -> None:
        """Drop a last line without its newline (a write torn by a crash)."""
        size = os.fstat(fd).st_size
        if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
            return
        end = size
        while end > 0:
            start = max(0, end - 65536)
            chunk = os.pread(fd, end - start, start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                os.ftruncate(fd, start + newline + 1)
                return
            end = start
        os.ftruncate(fd, 0)

    def _reject(self, rejected: list[tuple[Any, str]]) -> None:
        if not rejected:
            return
        now = int(time.time() * 1000)
        lines = [
            (json.dumps({"time": now, "error": message, "record": record}, allow_nan=True) + "\n")
            for record, message in rejected
        ]
        with self._locked():
            with open(self.rejected_path, "a", encoding="utf-8") as handle:
                handle.writelines(lines)
                handle.flush()
                os.fsync(handle.fileno())
        for record, message in rejected:
            _logger.warning(
                "MLflow rejected a %s record for run %s; kept in %s: %s",
                record.get("kind") if isinstance(record, dict) else "malformed",
                record.get("run_id") if isinstance(record, dict) else "?",
                self.rejected_path,
                message,
            )

    # -- reading ------------------------------------------------------------

    def _identity(self) -> tuple[int, str] | None:
        """Which journal file the cursor belongs to: (inode, digest of its first line).

        Compaction replaces the file, so a cursor written for the old file
        must not apply to the new one; the first line guards against the
        file system reusing the old inode number.
        """
        try:
            with open(self.path, "rb") as handle:
                first_line = handle.readline()
                inode = os.fstat(handle.fileno()).st_ino
        except FileNotFoundError:
            return None
        if not first_line.endswith(b"\n"):
            first_line = b""
        return inode, hashlib.sha1(first_line).hexdigest()[:16]

    def _cursor(self, identity: tuple[int, str] | None, size: int) -> int:
        if identity is None:
            return 0
        try:
            state = json.loads(self.cursor_path.read_text(encoding="utf-8"))
            offset = int(state["offset"])
            if (state["inode"], state["head"]) != identity:
                return 0  # written for a journal file that has since been emptied
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return 0
        return offset if 0 <= offset <= size else 0

    def _write_cursor(self, identity: tuple[int, str], offset: int) -> None:
        with self._locked():
            if self._identity() != identity:
                return  # compacted by another process meanwhile: nothing to record
            size = self.path.stat().st_size
            if offset <= self._cursor(identity, size):
                return  # never move backwards (another replayer got further)
            temporary = self.cursor_path.with_name(self.cursor_path.name + ".tmp")
            with open(temporary, "w", encoding="utf-8") as handle:
                json.dump({"inode": identity[0], "head": identity[1], "offset": offset}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, self.cursor_path)
            _fsync_directory(self.path.parent)

    def _read_pending(
        self,
    ) -> tuple[tuple[int, str] | None, list[tuple[dict | None, bytes, int]]]:
        """``(identity, [(record or None if unreadable, raw line, end offset)])`` to read."""
        if not self.path.exists():
            return None, []  # nothing ever spooled: no lock file, no directory
        with self._locked():
            identity = self._identity()
            if identity is None:
                return None, []
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                offset = self._cursor(identity, size)
                handle.seek(offset)
                data = handle.read(size - offset)
        entries: list[tuple[dict | None, bytes, int]] = []
        position = offset
        for line in data.split(b"\n")[:-1]:  # the last piece is empty or a torn line
            position += len(line) + 1
            if not line.strip():
                continue
            try:
                record = check_record(json.loads(line))
            except (ValueError, TypeError):
                record = None
            entries.append((record, line, position))
        return identity, entries

    def pending(self) -> list[dict]:
        """The records not yet replayed, oldest first (a torn last line is ignored)."""
        return [record for record, _, _ in self._read_pending()[1] if record is not None]

    def pending_count(self) -> int:
        """``len(self.pending())``."""
        return len(self.pending())

    def rejected(self) -> list[dict]:
        """Records the store refused for good: ``{"time", "error", "record"}`` dicts."""
        try:
            lines = self.rejected_path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            with contextlib.suppress(ValueError):
                entries.append(json.loads(line))
        return entries

    # -- replay -------------------------------------------------------------

    def replay(self, client: Any) -> tuple[int, int]:
        """Send pending records in order; return ``(sent, remaining)``.

        Stops at the first transient failure (the store is unreachable);
        progress is recorded after every request, so the next replay starts
        where this one stopped. Records the store refuses for good are moved
        to :attr:`rejected_path` (counted in neither number). Runs with
        :func:`~keras_optsuite.callbacks._store.fail_fast_http`, so an
        unreachable server makes it return in milliseconds, not minutes.

        Example:
        >>> sent, remaining = Journal(path).replay(mlflow.MlflowClient(uri))
        """
        sent = 0
        with fail_fast_http():
            while True:
                identity, entries = self._read_pending()
                if not entries:
                    break
                if entries[0][0] is None:  # corrupted line (not a torn tail): set aside
                    _, raw, end = entries[0]
                    self._reject([(raw.decode("utf-8", "replace"), "unreadable journal line")])
                    self._write_cursor(identity, end)
                    continue
                readable = []
                for record, _, end in entries:
                    if record is None:
                        break
                    readable.append((record, end))
                records = [record for record, _ in readable]
                progress = {"handled": 0}

                def on_progress(handled: int, rejected: list[tuple[dict, str]]) -> None:
                    nonlocal sent
                    self._reject(rejected)  # before the cursor moves past them
                    sent += handled - progress["handled"] - len(rejected)
                    progress["handled"] = handled
                    if handled:
                        self._write_cursor(identity, readable[handled - 1][1])

                _, error = _send_in_order(client, records, self.runs, on_progress)
                if error is not None:
                    _logger.info("Journal replay stopped after %d records: %s", sent, error)
                    return sent, self.pending_count()
            self._compact()
        return sent, self.pending_count()

    def _compact(self) -> None:
        """Replace a fully replayed journal by an empty file (the cursor then no longer applies)."""
        if not self.path.exists():
            return
        with self._locked():
            identity = self._identity()
            if identity is None:
                return
            size = self.path.stat().st_size
            if size == 0:
                return
            cursor = self._cursor(identity, size)
            with open(self.path, "rb") as handle:
                handle.seek(cursor)
                if b"\n" in handle.read(size - cursor):
                    return  # complete records remain (a torn tail alone does not count)
            temporary = self.path.with_name(self.path.name + ".tmp")
            with open(temporary, "wb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, self.path)
            _fsync_directory(self.path.parent)
            with contextlib.suppress(FileNotFoundError):
                self.cursor_path.unlink()


# ---------------------------------------------------------------------------
# Sink.

_REPLAY, _SPOOL, _SEND, _STOP = "replay", "spool", "send", "stop"


def _close_at_exit(sink_reference: "weakref.ref[Sink]") -> None:
    sink = sink_reference()
    if sink is not None:
        sink.close()


class Sink:
    """Asynchronous, order-preserving, outage-proof delivery of tracking records.

    Every call enqueues and returns at once. One background thread sends
    the queue with ``client.log_batch`` (MLflow's limits respected: 1000
    metrics, 100 params, 100 tags per call), in call order. When a send
    fails because the store is unreachable, the unsent records and all later
    ones go to ``journal`` (fsync'd), and the thread replays the journal with
    exponential backoff (``retry_delay`` doubling up to ``max_retry_delay``;
    :meth:`flush` triggers an attempt at once); once it is empty, direct
    sending resumes. Records already in the journal when the sink
    starts (a previous crash) are replayed first. The thread's MLflow calls
    use :func:`~keras_optsuite.callbacks._store.fail_fast_http`, so one
    failing call costs milliseconds, not MLflow's minutes of retries.

    Guarantees: the order of records is preserved (per run and overall);
    :meth:`flush` and :meth:`close` return as soon as the store is found
    unreachable, at the latest after their timeout (plus the time to fsync
    the spool), and leave whatever is unsent in the journal;
    at interpreter exit an unclosed sink is closed. Only records still in
    memory (not yet sent nor spooled) are lost if the process is killed with
    SIGKILL; call :meth:`flush` at checkpoints to bound that. Re-sending is
    harmless (see the module docstring). Thread-safe.

    A run can be started while the store is unreachable: :meth:`create_run`
    returns a pending id at once; the run is created when the store answers.

    Before resuming a run that a previous process terminated (e.g. KILLED),
    let the old journal drain (:meth:`flush` or :meth:`Journal.replay`):
    a stale ``terminate`` record replayed later would end the resumed run.

    Args:
        client: an ``mlflow.MlflowClient``.
        journal: where records wait while the store is unreachable.
        flush_timeout: default timeout of :meth:`flush` and :meth:`close`,
            seconds. Defaults to `10.0`.
        retry_delay: first wait before replaying after a failure, seconds.
            Defaults to `0.5`.
        max_retry_delay: longest wait between replays, seconds. Defaults to `30.0`.

    Example:
    >>> client = mlflow.MlflowClient(tracking_uri)
    >>> sink = Sink(client, Journal(default_journal_path(tracking_uri)))
    >>> sink.log_metrics(run_id, [Metric("loss", 0.25, int(time.time() * 1000), step)])
    >>> sink.terminate(run_id, "FINISHED")
    >>> unsent = sink.close()  # 0, or the number of records waiting in the journal
    """

    _MAX_RECORDS_PER_SEND = 500
    _FLUSH_RETRY_INTERVAL = 0.25
    _JOIN_TIMEOUT = 0.5

    def __init__(
        self,
        client: Any,
        journal: Journal,
        flush_timeout: float = 10.0,
        *,
        retry_delay: float = 0.5,
        max_retry_delay: float = 30.0,
    ) -> None:
        if not isinstance(journal, Journal):
            raise ValueError(f"journal must be a Journal, got journal={journal!r}")
        self.client = client
        self.journal = journal
        self.flush_timeout = check_positive("flush_timeout", flush_timeout)
        self._initial_retry_delay = check_positive("retry_delay", retry_delay)
        self._max_retry_delay = max(
            check_positive("max_retry_delay", max_retry_delay), self._initial_retry_delay
        )
        self._condition = threading.Condition()
        self._queue: collections.deque[tuple[int, dict]] = collections.deque()
        self._next_sequence = 0
        self._in_flight: list[tuple[int, dict]] | None = None
        self._in_flight_taken = False
        # Journal writes happen in ticket order, outside the condition's lock.
        self._next_ticket = 0
        self._serving_ticket = 0
        self._spools_started = 0
        self._spooling = 0
        # Start in outage mode: whatever an earlier process left in the
        # journal is replayed before any new record is sent.
        self._outage = True
        self._retry_delay = self._initial_retry_delay
        self._next_retry = 0.0
        self._last_attempt = -math.inf
        self._failed_attempts = 0
        self._spool_retry_at = 0.0  # after a failed journal write (disk full)
        self._flush_waiters = 0
        self._stopping = False
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="keras-optsuite-mlflow-sink", daemon=True
        )
        self._thread.start()
        self._exit_hook = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._exit_hook)

    # -- public calls -------------------------------------------------------

    def log_metrics(self, run_id: str, metrics: Sequence[Any]) -> None:
        """Queue ``mlflow.entities.Metric`` objects (key, value, timestamp in ms, step)."""
        run_id = _check_run_id(run_id)
        rows = [[m.key, float(m.value), int(m.timestamp), int(m.step or 0)] for m in metrics]
        self._enqueue(
            {"kind": "metrics", "run_id": run_id, "metrics": rows[i : i + MAX_METRICS_PER_BATCH]}
            for i in range(0, len(rows), MAX_METRICS_PER_BATCH)
        )

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """Queue params (values become strings; MLflow refuses to change a logged value)."""
        self._enqueue_mapping("params", run_id, params, MAX_PARAMS_PER_BATCH)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        """Queue tags (values become strings; a later value overwrites)."""
        self._enqueue_mapping("tags", run_id, tags, MAX_TAGS_PER_BATCH)

    def terminate(self, run_id: str, status: str = "FINISHED", end_time: int | None = None) -> None:
        """Queue the end of a run: ``status`` FINISHED, FAILED or KILLED; ``end_time`` ms (now)."""
        record = {
            "kind": "terminate",
            "run_id": run_id,
            "status": status,
            "end_time": int(time.time() * 1000) if end_time is None else end_time,
        }
        self._enqueue([check_record(record)])

    def create_run(
        self,
        experiment: str | None,
        run_name: str | None = None,
        tags: dict[str, Any] | None = None,
        start_time: int | None = None,
        *,
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Queue the creation of a run; return its pending id, usable at once in every other call.

        For a store that is unreachable now: the run is created (in
        ``experiment``, created if missing; ``start_time`` ms, default now)
        when the record is sent, and every record of the pending id goes to
        it. :meth:`resolve_run_id` tells its real id once it exists. A
        child run names its ``parent_run_id`` (a pending id too: the parent's
        creation comes first in the journal) and, with ``experiment`` None,
        goes to the parent's experiment. Pass
        the ``run_id`` of an earlier call (e.g. saved by a job that was
        killed) to queue the same creation again: it creates one run only.

        Example:
        >>> run_id = sink.create_run("digits", run_name="radam")
        >>> sink.log_params(run_id, {"learning_rate": 0.01})
        """
        record = check_record({
            "kind": "create_run",
            "run_id": PENDING_RUN_PREFIX + uuid.uuid4().hex if run_id is None else run_id,
            "experiment": experiment,
            "parent_run_id": parent_run_id,
            "run_name": run_name,
            "tags": dict(tags or {}),
            "start_time": int(time.time() * 1000) if start_time is None else start_time,
        })  # fmt: skip
        self._enqueue([record])
        return record["run_id"]

    def log_artifacts(self, run_id: str, directory: str | os.PathLike, artifact_path: str | None = None) -> None:
        """Queue the upload of the files under ``directory`` (to ``artifact_path``); it is deleted once uploaded.

        ``directory`` must be a copy the sink may delete (see
        :meth:`Journal.new_artifacts_directory`); it must stay until then.
        """
        directory = Path(directory).expanduser().absolute()
        if not directory.is_dir():
            raise ValueError(f"directory must be an existing directory, got directory={str(directory)!r}")
        record = {"kind": "artifacts", "run_id": run_id, "directory": str(directory), "artifact_path": artifact_path}
        self._enqueue([check_record(record)])

    def log_inputs(self, run_id: str, datasets: Sequence[Any]) -> None:
        """Queue ``mlflow.entities.DatasetInput`` objects (``client.log_inputs``)."""
        entries = []
        for dataset_input in datasets:
            dataset = dataset_input.dataset
            contexts = [tag.value for tag in dataset_input.tags if tag.key == "mlflow.data.context"]
            entries.append({
                "name": dataset.name, "digest": dataset.digest, "source_type": dataset.source_type,
                "source": dataset.source, "schema": dataset.schema, "profile": dataset.profile,
                "context": contexts[0] if contexts else None,
            })  # fmt: skip
        self._enqueue([check_record({"kind": "inputs", "run_id": run_id, "datasets": entries})])

    def resolve_run_id(self, run_id: str) -> str | None:
        """The real id of ``run_id``: itself, or for a pending id the run created for it (None until then)."""
        return self.journal.runs.get(_check_run_id(run_id))

    def flush(self, timeout: float | None = None) -> int:
        """Send everything queued so far if the store answers; return the number of records unsent.

        Returns 0 once every record queued before the call (and everything
        in the journal) is in the store. Returns early, with the unsent
        records written to the journal (fsync'd), as soon as an attempt to
        reach the store made after the call fails, or after ``timeout``
        seconds (default :attr:`flush_timeout`; a hung server). The return
        value then counts the journal's pending records, which the sink, a
        later sink or ``optsuite tracking replay`` will send.
        """
        timeout = self.flush_timeout if timeout is None else check_non_negative("timeout", timeout)
        deadline = time.monotonic() + timeout
        with self._condition:
            if self._closed:
                return self.journal.pending_count()
            target = self._next_sequence - 1
            failures_before = self._failed_attempts
            self._flush_waiters += 1
            self._condition.notify_all()
            try:
                while not self._delivered_through(target):
                    if self._failed_attempts > failures_before:
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._condition.wait(remaining)
            finally:
                self._flush_waiters -= 1
            if self._delivered_through(target):
                return 0
            self._spool_everything_in_memory()
            still_in_memory = len(self._queue)  # only if the journal could not be written
        return self.journal.pending_count() + still_in_memory

    def close(self, timeout: float | None = None) -> int:
        """Flush (bounded by ``timeout``), stop the thread; return the records left in the journal.

        Calls after ``close`` write straight to the journal.
        """
        with self._condition:
            if self._closed:
                return self.journal.pending_count()
        unsent = self.flush(timeout)
        with self._condition:
            self._closed = True
            self._stopping = True
            self._condition.notify_all()
        self._thread.join(self._JOIN_TIMEOUT)
        with self._condition:
            if self._queue or (self._in_flight is not None and not self._in_flight_taken):
                self._spool_everything_in_memory()
                unsent = None
        atexit.unregister(self._exit_hook)
        return self.journal.pending_count() if unsent is None else unsent

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- internals: called with the condition held ----------------------------

    def _enqueue_mapping(self, kind: str, run_id: str, mapping: dict, limit: int) -> None:
        run_id = _check_run_id(run_id)
        items = list(_check_string_mapping(kind, mapping).items())
        chunks, chunk, size = [], {}, 0
        for key, value in items:
            item_size = len(key) + len(value) + 20
            if chunk and (len(chunk) >= limit or size + item_size > MAX_BATCH_TEXT_BYTES):
                chunks.append(chunk)
                chunk, size = {}, 0
            chunk[key] = value
            size += item_size
        if chunk:
            chunks.append(chunk)
        self._enqueue({"kind": kind, "run_id": run_id, kind: c} for c in chunks)

    def _enqueue(self, records: Iterable[dict]) -> None:
        records = list(records)
        if not records:
            return
        with self._condition:
            if self._closed:
                self._spool([(-1, record) for record in records])
                return
            for record in records:
                self._queue.append((self._next_sequence, record))
                self._next_sequence += 1
            self._condition.notify_all()

    def _delivered_through(self, sequence: int) -> bool:
        if self._outage or self._spooling:
            return False
        if self._queue and self._queue[0][0] <= sequence:
            return False
        return not (self._in_flight and self._in_flight[0][0] <= sequence)

    def _spool_everything_in_memory(self) -> None:
        items: list[tuple[int, dict]] = []
        if self._in_flight is not None and not self._in_flight_taken:
            items.extend(self._in_flight)  # may also arrive: resending is harmless
            self._in_flight_taken = True
        items.extend(self._queue)
        self._queue.clear()
        if items:
            self._spool(items)

    def _spool(self, items: list[tuple[int, dict]]) -> None:
        """Write ``items`` to the journal after every earlier spool; releases the lock meanwhile."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._spools_started += 1
        self._spooling += 1
        self._outage = True
        try:
            while self._serving_ticket != ticket:
                self._condition.wait()
            self._condition.release()
            try:
                self.journal.extend(record for _, record in items)
            except Exception:  # noqa: BLE001 - disk full, permissions: keep them in memory
                _logger.exception(
                    "Could not write %d tracking records to %s; keeping them in memory",
                    len(items), self.journal.path,
                )
                failed = True
            else:
                failed = False
            finally:
                self._condition.acquire()
            if failed:
                self._queue.extendleft(reversed(items))
                self._spool_retry_at = time.monotonic() + self._retry_delay
        finally:
            self._serving_ticket += 1
            self._spooling -= 1
            self._condition.notify_all()

    def _next_action(self) -> tuple[str, Any]:
        while True:
            now = time.monotonic()
            if self._stopping:
                if self._queue:
                    return _SPOOL, None
                return _STOP, None
            if self._outage:
                due = now >= self._next_retry or (
                    self._flush_waiters and now >= self._last_attempt + self._FLUSH_RETRY_INTERVAL
                )
                if due and not self._spooling:
                    return _REPLAY, self._spools_started
                if self._queue and now >= self._spool_retry_at:
                    return _SPOOL, None
                wake_at = self._next_retry
                if self._flush_waiters:
                    wake_at = min(wake_at, self._last_attempt + self._FLUSH_RETRY_INTERVAL)
                if self._queue:
                    wake_at = min(wake_at, self._spool_retry_at)
                self._condition.wait(max(0.0, wake_at - now) if not self._spooling else None)
            elif self._queue:
                count = min(len(self._queue), self._MAX_RECORDS_PER_SEND)
                batch = [self._queue.popleft() for _ in range(count)]
                self._in_flight = batch
                self._in_flight_taken = False
                return _SEND, batch
            else:
                self._condition.wait()

    def _failed_attempt(self) -> None:
        self._last_attempt = time.monotonic()
        self._next_retry = self._last_attempt + self._retry_delay
        self._retry_delay = min(self._retry_delay * 2, self._max_retry_delay)
        self._failed_attempts += 1

    # -- the background thread ------------------------------------------------

    def _run(self) -> None:
        with fail_fast_http():
            while True:
                with self._condition:
                    action, argument = self._next_action()
                    if action == _STOP:
                        return
                    if action == _SPOOL:
                        items = list(self._queue)
                        self._queue.clear()
                        self._spool(items)
                        continue
                try:
                    if action == _REPLAY:
                        self._replay(spools_before=argument)
                    else:
                        self._send(argument)
                except Exception:  # noqa: BLE001 - never let the thread die
                    _logger.exception("Unexpected error in the MLflow tracking sink")
                    with self._condition:
                        if action == _SEND and not self._in_flight_taken:
                            self._spool(argument)
                        self._in_flight = None
                        self._failed_attempt()
                        self._condition.notify_all()

    def _replay(self, spools_before: int) -> None:
        try:
            _, remaining = self.journal.replay(self.client)
        except Exception:  # noqa: BLE001
            _logger.exception("Replaying the tracking journal %s failed", self.journal.path)
            remaining = None
        with self._condition:
            if remaining == 0 and self._spools_started == spools_before:
                self._outage = False
                self._retry_delay = self._initial_retry_delay
                self._last_attempt = time.monotonic()
            elif remaining == 0:
                self._next_retry = 0.0  # records were spooled meanwhile: replay them too
            else:
                self._failed_attempt()
            self._condition.notify_all()

    def _send(self, batch: list[tuple[int, dict]]) -> None:
        records = [record for _, record in batch]
        rejected_all: list[tuple[dict, str]] = []

        def on_progress(handled: int, rejected: list[tuple[dict, str]]) -> None:
            rejected_all.extend(rejected)

        handled, error = _send_in_order(self.client, records, self.journal.runs, on_progress)
        if rejected_all:
            self.journal._reject(rejected_all)
        with self._condition:
            if error is not None:
                _logger.warning(
                    "MLflow tracking store unreachable (%s); spooling to %s",
                    error,
                    self.journal.path,
                )
                if not self._in_flight_taken:
                    self._in_flight_taken = True
                    self._spool(batch[handled:])
                self._failed_attempt()
            self._in_flight = None
            self._condition.notify_all()
