"""The asynchronous, outage-proof sink the tracking callback writes to.

:class:`Sink` is what the tracking callback calls: it enqueues and returns at
once; one background thread sends batches with ``client.log_batch`` and, when
the store is unreachable, spools to the journal (``_journal.py``) and replays
it (with backoff) before anything newer.
"""

from __future__ import annotations

import atexit
import collections
import functools
import logging
import math
import os
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Any, Iterable, Sequence

from keras_optsuite._validation import check_non_negative, check_positive
from keras_optsuite.callbacks._journal import Journal
from keras_optsuite.callbacks._records import (
    PENDING_RUN_PREFIX,
    check_record,
    check_run_id,
    check_string_mapping,
)
from keras_optsuite.callbacks._requests import (
    MAX_BATCH_TEXT_BYTES,
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MAX_TAGS_PER_BATCH,
)
from keras_optsuite.callbacks._sending import send_in_order
from keras_optsuite.callbacks._store import fail_fast_http

_logger = logging.getLogger(__name__)

_REPLAY, _SPOOL, _SEND, _STOP = "replay", "spool", "send", "stop"


def _close_at_exit(sink_reference: weakref.ref[Sink]) -> None:
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
        send_interval: how long a record may wait for others before the
            thread sends, seconds: records arriving meanwhile go in the same
            ``log_batch`` (one store transaction for many logging steps).
            :meth:`flush` and :meth:`close` send at once. Records waiting are
            in memory only, so a SIGKILL loses at most this much more.
            Defaults to `0.0` (send as soon as anything is queued).

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
        send_interval: float = 0.0,
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
        self._send_interval = check_non_negative("send_interval", send_interval)
        self._queued_since = 0.0  # when the oldest record in the queue was queued
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
        run_id = check_run_id(run_id)
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
        return self.journal.runs.get(check_run_id(run_id))

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
        unsent: int | None = self.flush(timeout)
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

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # -- internals: called with the condition held ----------------------------

    def _enqueue_mapping(self, kind: str, run_id: str, mapping: dict, limit: int) -> None:
        run_id = check_run_id(run_id)
        items = list(check_string_mapping(kind, mapping).items())
        chunks: list[dict[str, str]] = []
        chunk: dict[str, str] = {}
        size = 0
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
            was_empty = not self._queue
            if was_empty:
                self._queued_since = time.monotonic()
            for record in records:
                self._queue.append((self._next_sequence, record))
                self._next_sequence += 1
            if was_empty or not self._send_interval:  # else the thread is already waiting for the interval
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
                send_at = self._queued_since + self._send_interval
                if now < send_at and not self._flush_waiters and len(self._queue) < self._MAX_RECORDS_PER_SEND:
                    self._condition.wait(send_at - now)
                    continue
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

        handled, error = send_in_order(self.client, records, self.journal.runs, on_progress)
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
