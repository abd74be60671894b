"""Send what the tracking callback journaled while its store did not answer (``optsuite tracking replay``).

Every journal remembers its store beside it (``<journal>.uri``), so a bare
replay sends each journal under ``mlruns/journals/`` to its own store. A
journal whose store is unknown (written before the ``.uri`` file existed,
and not the journal of ``MLFLOW_TRACKING_URI`` or the embedded store) is
reported with the command that replays it, never sent somewhere else. A
journal with nothing pending is not touched, so no store (no empty SQLite
database) is created by a replay that has nothing to send.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from keras_optsuite.callbacks._journal import Journal
from keras_optsuite.callbacks._store import (
    DEFAULT_DIRECTORY,
    JOURNALS_DIRECTORY_NAME,
    default_journal_path,
    resolve_tracking_uri,
)


@dataclasses.dataclass(frozen=True)
class JournalReplay:
    """What one journal's replay did.

    Attributes:
        journal: the journal file.
        tracking_uri: the store its records were sent to; None when unknown.
        sent: records the store took.
        remaining: records still waiting (the store did not answer, or is unknown).
        rejected: records the store refused for good (kept in ``<journal>.rejected``).
    """

    journal: Path
    tracking_uri: str | None
    sent: int
    remaining: int
    rejected: int


def replay_journals(
    journal: str | os.PathLike | None = None, tracking_uri: str | None = None
) -> list[JournalReplay]:
    """Replay journals, each to its own store unless ``tracking_uri`` names one.

    Args:
        journal: a journal file, or a directory whose ``*.jsonl`` journals
            are replayed; None for every journal under ``mlruns/journals/``
            (only the journal of ``tracking_uri`` when it is given).
        tracking_uri: send to this store instead of each journal's own.

    Example:
    >>> for result in replay_journals():
    ...     print(result.journal.name, result.tracking_uri, result.sent, result.remaining)
    """
    if journal is not None:
        target = Path(journal)
        paths = sorted(target.glob("*.jsonl")) if target.is_dir() else [target]
    elif tracking_uri is not None:
        paths = [default_journal_path(tracking_uri)]
    else:
        paths = sorted((Path(DEFAULT_DIRECTORY).absolute() / JOURNALS_DIRECTORY_NAME).glob("*.jsonl"))
    import mlflow

    results = []
    for path in paths:
        spool = Journal(path)
        uri = tracking_uri or spool.tracking_uri or _store_by_name(path)
        pending = spool.pending_count()
        if not pending:
            results.append(JournalReplay(spool.path, uri, 0, 0, 0))
            continue
        if uri is None:
            results.append(JournalReplay(spool.path, None, 0, pending, 0))
            continue
        rejected_before = len(spool.rejected())
        sent, remaining = spool.replay(mlflow.MlflowClient(uri))
        results.append(JournalReplay(spool.path, uri, sent, remaining, len(spool.rejected()) - rejected_before))
    return results


def _store_by_name(path: Path) -> str | None:
    """The store whose default journal ``path`` is: MLflow's configured one or the embedded one."""
    candidate = resolve_tracking_uri()
    return candidate if default_journal_path(candidate, path.parent.parent) == path.absolute() else None
