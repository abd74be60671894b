"""What lets cron run a pipeline unattended: a lock per pipeline, slots, progress on stderr.

- :class:`PipelineLock`: two runs of the same pipeline never overlap. The
  second exits 3 naming the holder's pid and start time. The lock is an
  ``flock`` on ``<output>/pipeline.lock``, so the kernel frees it when its
  holder dies, even by ``kill -9``; the file keeps the holder's pid and
  start time until a clean release, so the next run can say that it took
  over a stale lock and whose.
- :class:`Slot`: ``--slot KEY`` (e.g. the date) names one scheduled run. A
  re-run of a finished slot does nothing and exits 0; a re-run of a slot
  that crashed or failed resumes it (its runs continue: the slot keeps
  their backups and ids).
- :class:`Progress`: a Keras callback printing each epoch, elapsed and
  remaining time on stderr (silent with ``--quiet``).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import keras

from keras_optsuite.callbacks._durable import replace_file

LOCK_HELD_EXIT = 3


class LockHeld(RuntimeError):
    """Another run of the same pipeline holds its lock."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class PipelineLock:
    """An exclusive, crash-safe lock for one pipeline (see the module docstring).

    Example:
    >>> with PipelineLock(Path("outputs/compare/demo"), "compare demo"):
    ...     run_the_pipeline()
    """

    def __init__(self, directory: Path, pipeline: str, out: TextIO | None = None) -> None:
        self.path = Path(directory) / "pipeline.lock"
        self.pipeline = pipeline
        self.out = out if out is not None else sys.stderr
        self._fd: int | None = None

    def _holder(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def __enter__(self) -> PipelineLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = self._holder()
            raise LockHeld(
                f"another run of {self.pipeline} holds {self.path}: pid {holder.get('pid', '?')} on "
                f"{holder.get('host', '?')}, started {holder.get('started', '?')}"
            ) from None
        previous = self._holder()
        if previous.get("pid"):  # not released, and the flock is free: its holder died
            print(
                f"optsuite: took over the lock of {self.pipeline} left by pid {previous['pid']} "
                f"(started {previous.get('started', '?')}), which is no longer running",
                file=self.out,
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                                  "pipeline": self.pipeline}).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: Any) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # released cleanly: nothing stale to report
        os.close(fd)


class Slot:
    """The state of one scheduled run, ``<output>/slots/<key>.json`` (None key: no slot).

    ``status`` is ``"running"`` while it runs (and after a crash),
    ``"failed"`` or ``"finished"``; ``data`` is what the pipeline saves to
    resume or report (run ids, the summary).
    """

    def __init__(self, directory: Path, key: str | None) -> None:
        if key is not None and (not key or "/" in key or key.startswith(".")):
            raise ValueError(f"--slot must be a plain name such as a date, got slot={key!r}")
        self.key = key
        self.directory = Path(directory) / "slots" / key if key is not None else None
        self.path = Path(directory) / "slots" / f"{key}.json" if key is not None else None
        self.state: dict[str, Any] = self._read()

    def _read(self) -> dict[str, Any]:
        if self.path is None:
            return {}
        try:
            state = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    @property
    def finished(self) -> bool:
        return self.state.get("status") == "finished"

    @property
    def resumed(self) -> bool:
        """True when an earlier run of this slot started and did not finish."""
        return self.state.get("status") in ("running", "failed")

    def save(self, status: str | None = None, **data: Any) -> None:
        if self.path is None:
            return
        if status is not None:
            self.state["status"] = status
            self.state[f"{status}_at"] = _now()
        self.state.update(data)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(self.path, json.dumps(self.state, indent=2, default=str))


class Progress(keras.callbacks.Callback):
    """A Keras callback: one line per epoch on ``out`` (stderr) with elapsed and remaining time."""

    def __init__(self, label: str, epochs: int, quiet: bool = False, out: TextIO | None = None) -> None:
        super().__init__()
        self.label, self.epochs, self.quiet, self.out = label, epochs, quiet, out

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.monotonic()
        self.first_epoch: int | None = None  # a resumed fit starts after epoch 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.first_epoch is None:
            self.first_epoch = epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        done = epoch + 1
        left = elapsed / (done - (self.first_epoch or 0)) * (self.epochs - done)
        shown = " ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items() if k in _SHOWN)
        print(f"[{self.label}] epoch {done}/{self.epochs} {shown} · {elapsed:.1f} s elapsed, ~{left:.0f} s left",
              file=self.out if self.out is not None else sys.stderr, flush=True)


_SHOWN = ("loss", "val_loss", "accuracy", "val_accuracy", "mae", "val_mae")


def say(message: str, quiet: bool = False) -> None:
    """A progress line on stderr (nothing with ``--quiet``)."""
    if not quiet:
        print(message, file=sys.stderr, flush=True)
