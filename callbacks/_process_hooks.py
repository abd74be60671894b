"""Process-wide hooks that end a tracked run however the process ends.

Without them a crash or ``SIGTERM`` outside the tracking callback's ``with``
block leaves the MLflow run RUNNING. :class:`ProcessHooks` installs three
hooks while a run is open, each chaining to the one it replaced, and puts
those back when the run ends:

* ``sys.excepthook``: an uncaught exception (``KeyboardInterrupt`` included);
* ``atexit``: the interpreter exiting while the run is open;
* ``SIGTERM`` (main thread only): a scheduler or ``kill`` stopping the job.

Nothing else here touches the process's global state.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
import threading
from typing import Any, Callable


class ProcessHooks:
    """Call ``on_uncaught(exc_type, exc, tb)``, ``on_exit()`` or ``on_sigterm()`` as the process ends.

    ``install`` and ``remove`` bracket the run. After ``on_uncaught`` the
    previous ``sys.excepthook`` runs, and an uncaught ``KeyboardInterrupt``
    outside an interactive session ends the process as Python does
    (:func:`exit_as_interrupted`). After ``on_sigterm`` the previous SIGTERM
    handler runs if it is callable; otherwise the process exits with
    ``128 + SIGTERM``.
    """

    def __init__(
        self,
        on_uncaught: Callable[[Any, BaseException, Any], None],
        on_exit: Callable[[], None],
        on_sigterm: Callable[[], None],
    ) -> None:
        self._on_uncaught = on_uncaught
        self._on_exit = on_exit
        self._on_sigterm = on_sigterm
        self._previous_excepthook: Any = None
        self._previous_sigterm: Any = None

    def install(self) -> None:
        self._previous_excepthook = sys.excepthook
        sys.excepthook = self._excepthook
        atexit.register(self._on_exit)
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, self._sigterm)

    def remove(self) -> None:
        if self._previous_excepthook is not None and sys.excepthook == self._excepthook:
            sys.excepthook = self._previous_excepthook
        atexit.unregister(self._on_exit)
        if self._previous_sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        self._previous_excepthook = self._previous_sigterm = None

    def _excepthook(self, exc_type: Any, exc: Any, tb: Any) -> None:
        previous = self._previous_excepthook or sys.__excepthook__
        self._on_uncaught(exc_type, exc, tb)
        previous(exc_type, exc, tb)
        interrupted = issubclass(exc_type, KeyboardInterrupt)
        if interrupted and not (sys.flags.interactive or hasattr(sys, "ps1")):
            exit_as_interrupted()

    def _sigterm(self, signum: int, frame: Any) -> None:
        previous = self._previous_sigterm
        self._on_sigterm()
        if callable(previous):
            previous(signum, frame)
        else:
            raise SystemExit(128 + signum)


def exit_as_interrupted() -> None:
    """End the process as Python ends it on an uncaught Ctrl-C: killed by SIGINT (130 in a shell).

    CPython marks an uncaught KeyboardInterrupt with a flag that is cleared
    whenever C code runs Python through ``PyRun_String`` (Cython modules do;
    drawing the learning curves at the run's end did), and then the process
    exited 1, which a scheduler reads as a failure. The atexit handlers run
    first, as in a normal exit; then SIGINT with its default action.
    """
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
