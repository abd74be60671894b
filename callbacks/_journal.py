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

:class:`~keras_optsuite.callbacks._sink.Sink` is what the tracking callback
calls; it spools to a journal while the store is unreachable.

The journal's concerns, one module each: ``_records.py`` (the record schema,
validation and encoding), ``_requests.py`` (which records share one
``log_batch``), ``_sending.py`` (sending in order, permanent refusals vs
outages), ``_durable.py`` (fsync'd writes, the cross-process lock),
``_pending_runs.py`` (pending run ids), this module (:class:`Journal`) and
``_sink.py`` (:class:`~keras_optsuite.callbacks._sink.Sink`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from keras_optsuite.callbacks._durable import FileLock, fsync_directory, replace_file, write_all
from keras_optsuite.callbacks._pending_runs import PendingRuns
from keras_optsuite.callbacks._records import (
    UNSENT_ARTIFACTS_DIRECTORY,
    check_record,
    check_run_id,
    encode_record,
)
from keras_optsuite.callbacks._sending import send_in_order
from keras_optsuite.callbacks._store import fail_fast_http

_logger = logging.getLogger(__name__)


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
        self._locked = FileLock(self.path.with_name(self.path.name + ".lock"))
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
        replace_file(self.uri_path, uri + "\n")

    def new_artifacts_directory(self, run_id: str) -> Path:
        """A new empty directory for artifacts of ``run_id`` that could not be uploaded.

        ``<journal dir>/unsent-artifacts/<run_id>/<time ms>-<random>/``: one
        per ``artifacts`` record, so a record never uploads (nor deletes)
        another's files.
        """
        name = f"{int(time.time() * 1000)}-{uuid.uuid4().hex[:8]}"
        directory = self.path.parent / UNSENT_ARTIFACTS_DIRECTORY / check_run_id(run_id) / name
        directory.mkdir(parents=True)
        return directory

    # -- writing ------------------------------------------------------------

    def append(self, record: dict) -> None:
        """Append one record durably (written and fsync'd before returning)."""
        self.extend([record])

    def extend(self, records: Iterable[dict]) -> None:
        """Append several records durably with a single fsync."""
        data = b"".join(encode_record(check_record(record)) for record in records)
        if not data:
            return
        with self._locked():
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                self._cut_torn_tail(fd)
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                fsync_directory(self.path.parent)

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
        with self._locked(), open(self.rejected_path, "a", encoding="utf-8") as handle:
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
            replace_file(self.cursor_path,
                         json.dumps({"inode": identity[0], "head": identity[1], "offset": offset}), durable=True)

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
                if not entries or identity is None:  # (entries come with the file's identity)
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

                # Called by send_in_order below, within this iteration: the defaults bind
                # this iteration's progress, identity and readable records.
                def on_progress(
                    handled: int, rejected: list[tuple[dict, str]],
                    progress: dict[str, int] = progress, identity: tuple[int, str] = identity,
                    readable: list[tuple[dict, int]] = readable,
                ) -> None:
                    nonlocal sent
                    self._reject(rejected)  # before the cursor moves past them
                    sent += handled - progress["handled"] - len(rejected)
                    progress["handled"] = handled
                    if handled:
                        self._write_cursor(identity, readable[handled - 1][1])

                _, error = send_in_order(client, records, self.runs, on_progress)
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
            replace_file(self.path, b"", durable=True)
            with contextlib.suppress(FileNotFoundError):
                self.cursor_path.unlink()
