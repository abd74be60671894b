"""What a restarted job needs to continue the same MLflow run, kept beside its backup.

``keras.callbacks.BackupAndRestore(backup_dir)`` restores the weights, the
optimizer (its ``iterations`` too) and the epoch of a job that was killed;
it deletes ``backup_dir`` when training ends normally. :class:`RunState`
follows the same life cycle in the sibling directory
``<backup_dir>.mlflow-run/``: written when the run starts and at every
epoch's end, removed when the run ends FINISHED, kept when it ends FAILED or
KILLED or the process dies, so the next start with the same ``backup_dir``
reattaches to the run instead of creating one.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from keras_optsuite.callbacks._durable import replace_file

SUFFIX = ".mlflow-run"
FORMAT = 1


class RunState:
    """The resumable state of one run: ``run.json`` (+ files such as ``best.keras``).

    Example:
    >>> state = RunState("backups/job-1")      # files in backups/job-1.mlflow-run/
    >>> state.save({"run_id": run_id, "tracking_uri": uri})
    >>> RunState("backups/job-1").load()["run_id"] == run_id
    True
    """

    def __init__(self, backup_dir: str | os.PathLike) -> None:
        text = os.fspath(backup_dir).rstrip("/\\")
        if not text:
            raise ValueError(f"backup_dir must name a directory, got backup_dir={backup_dir!r}")
        self.directory = Path(text + SUFFIX).absolute()
        self.path = self.directory / "run.json"

    def __repr__(self) -> str:
        return f"RunState({str(self.directory)!r})"

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none (or it is unreadable)."""
        try:
            state = json.loads(self.path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not isinstance(state, dict) or state.get("format") != FORMAT or not state.get("run_id"):
            return None
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Replace the state atomically (a kill leaves the old or the new file, whole)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        replace_file(self.path, json.dumps({**state, "format": FORMAT}), durable=True)

    def clear(self) -> None:
        """Forget the run (it ended FINISHED): the next start creates a new one."""
        shutil.rmtree(self.directory, ignore_errors=True)
