"""Which real MLflow run each pending run id (a run started offline) became."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keras_optsuite.callbacks._durable import FileLock, replace_file
from keras_optsuite.callbacks._records import is_pending_run_id


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
        self.locked = FileLock(self.path.with_name(self.path.name + ".lock"))
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
            replace_file(self.path, json.dumps(mapping, indent=0), durable=True)
            self._known[pending] = real

    def _read(self) -> dict[str, str]:
        try:
            mapping = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        if not isinstance(mapping, dict):
            return {}
        return {k: v for k, v in mapping.items() if isinstance(k, str) and isinstance(v, str)}
