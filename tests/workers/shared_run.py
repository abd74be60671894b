"""Do a test module's expensive set-up (a launch of workers) once per pytest run.

``make test`` runs ``pytest -n 2 --dist loadgroup`` and the launching
modules are marked ``xdist_group``, so that their tests share one xdist
worker and one module-scoped fixture (``conftest.py`` makes the mark work
under pytest 9, where pytest-xdist 3.8's own way silently stopped working).
A module fixture is still set up again if pytest runs another module's test
between two of its tests on that worker, and a plain ``pytest -n 2`` (no
``--dist loadgroup``) spreads the module over both workers. With
:func:`shared_directory` and :func:`exclusive` the first process does the
work in a directory every xdist worker of the run sees; the others wait for
it and read its files.

Example::

    directory = shared_directory(tmp_path_factory, "my-launch")
    with exclusive(directory):
        if not (directory / "status.json").exists():
            ...  # launch, then write status.json last
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def shared_directory(tmp_path_factory, name: str) -> Path:
    """``name`` under the base temporary directory of this pytest run (shared
    by its xdist workers, whose own base directories are its children)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    directory = base / name
    directory.mkdir(exist_ok=True)
    return directory


@contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (other processes wait)."""
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
