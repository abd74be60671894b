"""A real ``mlflow server`` on 127.0.0.1 for tests, and pytest fixtures around it.

Use from a test module (``tests/`` is on ``sys.path`` via conftest)::

    from mlflow_server import MlflowServer, embedded_tracking_uri, mlflow_server  # noqa: F401

    def test_something(mlflow_server):
        client = mlflow.MlflowClient(mlflow_server.uri)

``mlflow_server`` is session-scoped (one server per pytest-xdist worker): a
start costs ~5-7 s on an idle 2-core CI machine (first start with schema
creation ~7 s, restart on the same database ~5 s) and twice that under
load, so every test module shares it. Tests use their own experiment names
(they share one database). A test that stops it (an outage) must start it
again in a ``finally``. Tests needing a private server build one:
``with MlflowServer(tmp_path) as server: ...``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

# MLflow 3 sends usage telemetry by default: tests stay on 127.0.0.1.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

STARTUP_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health_ok(uri: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class MlflowServer:
    """``mlflow server`` with a SQLite backend in ``directory``, as a subprocess.

    ``start()`` waits (at most ``startup_timeout`` seconds) until ``/health``
    answers; ``stop()`` ends the whole process group (SIGTERM, then SIGKILL);
    ``start()`` again serves the SAME port and database: an outage and
    recovery. Also a context manager.

    Example:
    >>> with MlflowServer(tmp_path) as server:
    ...     client = mlflow.MlflowClient(server.uri)
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.database = self.directory / "server.db"
        self.artifacts = self.directory / "server-artifacts"
        self.log_path = self.directory / "server.log"
        self.port = port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.last_start_seconds: float | None = None
        self._process: subprocess.Popen | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _command(self) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", f"sqlite:///{self.database.as_posix()}",
            "--default-artifact-root", self.artifacts.as_uri(),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--workers", "1",
        ]  # fmt: skip

    def start(self) -> "MlflowServer":
        """Start (or restart) the server and wait until it answers ``/health``."""
        if self.running:
            return self
        environment = dict(os.environ)
        environment["MLFLOW_DISABLE_TELEMETRY"] = "true"
        environment.pop("MLFLOW_TRACKING_URI", None)
        atexit.register(self.stop)  # never leave a server behind, even if a fixture is skipped
        started = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self._command(),
                cwd=self.directory,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends uvicorn too
            )
        deadline = started + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with code {self._process.returncode}:\n{self.log_tail()}"
                )
            if _health_ok(self.uri):
                self.last_start_seconds = time.monotonic() - started
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"mlflow server did not answer {self.uri}/health within "
            f"{self.startup_timeout:.0f} s:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and its workers; the port refuses connections afterwards."""
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(STOP_TIMEOUT)
        # Workers left behind by a crashed parent would keep serving.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _health_ok(self.uri, timeout=0.2) and time.monotonic() < deadline:
            time.sleep(0.05)

    def log_tail(self, characters: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-characters:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> "MlflowServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"MlflowServer({self.uri}, running={self.running})"


@pytest.fixture(scope="session")
def shared_mlflow_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """The one ``MlflowServer`` of a test process (use :func:`mlflow_server`)."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mlflow_server(shared_mlflow_server_process: MlflowServer) -> MlflowServer:
    """A running ``MlflowServer`` shared by every test of a test process.

    A test may stop it (to simulate an outage) but must start it again
    (``try: server.stop() ... finally: server.start()``); should an earlier
    test have failed before restarting it, it is started again here.
    """
    return shared_mlflow_server_process.start()


@pytest.fixture
def embedded_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The embedded SQLite store under ``tmp_path/mlruns``; the test runs in ``tmp_path``.

    ``MLFLOW_TRACKING_URI`` is removed for the test, so code that falls back
    to the default store writes under ``tmp_path``, never the repository.
    """
    from keras_optsuite.callbacks._store import default_tracking_uri

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return default_tracking_uri(tmp_path / "mlruns")


@pytest.fixture(scope="module")
def shared_embedded_tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One embedded SQLite store for a whole module (creating its schema takes 1-3 s).

    Tests sharing it must use their own runs/experiments. Unlike
    :func:`embedded_tracking_uri` it does not change the working directory.
    """
    from keras_optsuite.callbacks._store import default_tracking_uri

    return default_tracking_uri(tmp_path_factory.mktemp("embedded") / "mlruns")
