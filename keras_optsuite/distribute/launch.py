"""Run a ``tf.distribute`` cluster as local processes, one per task.

:func:`launch` starts the same command once per task with the ``TF_CONFIG``
TensorFlow's cluster resolver reads, on free ``127.0.0.1`` ports, and streams
every process's output line by line with a ``[worker 0] `` prefix. It is how
multi-worker training is tried on one machine and how the tests run it.
This module does not import TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Mapping, Sequence, TextIO

from keras_optsuite._validation import (
    check_non_negative,
    check_non_negative_int,
    check_positive,
    check_positive_int,
)

HOST = "127.0.0.1"
#: Exit code of :func:`launch` when ``timeout`` ran out (as GNU ``timeout``).
TIMEOUT_EXIT_CODE = 124
#: Exit code of :func:`launch` when the command cannot be started (as a shell).
NOT_STARTED_EXIT_CODE = 127


@dataclass(frozen=True)
class ClusterTask:
    """One process of a cluster: its role, index and ``TF_CONFIG``.

    A Keras Tuner search task (:func:`search_tasks`) has no ``TF_CONFIG``
    (``tf_config`` None) but the ``KERASTUNER_*`` variables in ``env``.
    """

    type: str  # "chief", "worker" or "ps"; "chief" or "tuner" in a search
    index: int
    tf_config: dict[str, Any] | None
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """``"worker 0"``: the output prefix, without brackets."""
        return f"{self.type} {self.index}"

    def environment(self) -> dict[str, str]:
        """The variables this task's process gets on top of the launcher's environment."""
        tf_config = {} if self.tf_config is None else {"TF_CONFIG": json.dumps(self.tf_config)}
        return {**tf_config, **self.env}


def free_ports(count: int, host: str = HOST) -> list[int]:
    """``count`` distinct TCP ports that are free on ``host`` right now.

    The ports are released before they are returned, so another program
    could take one in between; for local tests that window is harmless.
    """
    count = check_non_negative_int("count", count)
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def cluster_tasks(
    workers: int,
    ps: int = 0,
    ports: Sequence[int] | None = None,
    host: str = HOST,
) -> list[ClusterTask]:
    """The tasks of a local cluster, each with its full ``TF_CONFIG``.

    Without parameter servers the cluster is ``workers`` workers (worker 0 is
    the chief, as ``MultiWorkerMirroredStrategy`` expects). With ``ps > 0`` it
    is one chief (the coordinator of ``ParameterServerStrategy``), ``workers``
    workers and ``ps`` parameter servers. Ports are taken in that order from
    ``ports``, or picked free on ``host``.

    Example:

    >>> tasks = cluster_tasks(workers=2, ps=1, ports=[5000, 5001, 5002, 5003])
    >>> [task.name for task in tasks]
    ['chief 0', 'worker 0', 'worker 1', 'ps 0']
    >>> tasks[1].tf_config["task"]
    {'type': 'worker', 'index': 0}
    """
    workers = check_positive_int("workers", workers)
    ps = check_non_negative_int("ps", ps)
    roles = (["chief"] if ps else []) + ["worker"] * workers + ["ps"] * ps
    if ports is None:
        ports = free_ports(len(roles), host)
    elif len(ports) != len(roles) or len(set(ports)) != len(ports):
        raise ValueError(
            f"ports must be {len(roles)} distinct ports for {workers} worker(s) and "
            f"{ps} parameter server(s){' plus a chief' if ps else ''}, got ports={list(ports)!r}"
        )
    cluster: dict[str, list[str]] = {}
    for role, port in zip(roles, ports):
        cluster.setdefault(role, []).append(f"{host}:{port}")
    return [
        ClusterTask(
            type=role,
            index=index,
            tf_config={"cluster": cluster, "task": {"type": role, "index": index}},
        )
        for role, addresses in cluster.items()
        for index in range(len(addresses))
    ]


def search_tasks(workers: int, port: int | None = None, host: str = HOST) -> list[ClusterTask]:
    """The processes of a distributed Keras Tuner search: a chief (the oracle) and ``workers`` tuners.

    Keras Tuner finds its role in ``KERASTUNER_TUNER_ID`` (``"chief"``,
    ``"tuner0"``, ``"tuner1"``, ...) and the chief's gRPC oracle at
    ``KERASTUNER_ORACLE_IP``:``KERASTUNER_ORACLE_PORT`` (``port``, or one
    picked free on ``host``).

    Example:

    >>> [task.env["KERASTUNER_TUNER_ID"] for task in search_tasks(2, port=5000)]
    ['chief', 'tuner0', 'tuner1']
    """
    workers = check_positive_int("workers", workers)
    port = free_ports(1, host)[0] if port is None else port
    address = {"KERASTUNER_ORACLE_IP": host, "KERASTUNER_ORACLE_PORT": str(port)}
    chief = ClusterTask("chief", 0, None, {"KERASTUNER_TUNER_ID": "chief", **address})
    return [chief] + [ClusterTask("tuner", index, None, {"KERASTUNER_TUNER_ID": f"tuner{index}", **address})
                      for index in range(workers)]


def launch_search(
    command: Sequence[str],
    workers: int,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    output: TextIO | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    grace_period: float = 5.0,
) -> int:
    """Run a Keras Tuner search script as a chief and ``workers`` worker processes; return an exit code.

    :func:`launch` for Keras Tuner's distributed mode: the same ``command``
    once per task of :func:`search_tasks` (the ``KERASTUNER_*`` variables
    instead of ``TF_CONFIG``), output prefixed ``[chief 0]``, ``[tuner 1]``.
    The job ends when every process has exited with 0 (the chief's oracle
    waits for the last worker); as soon as one fails, the others are
    stopped. The script must give every process the same tuner
    ``directory`` (Keras Tuner's shared storage).

    Example:

    >>> launch_search([sys.executable, "search.py"], workers=2)
    0
    """
    return _launch_tasks(command, search_tasks(workers), env, timeout, output, cwd, grace_period,
                         chief_ends_job=False)


def launch(
    command: Sequence[str],
    workers: int,
    ps: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    output: TextIO | None = None,
    *,
    cwd: str | os.PathLike[str] | None = None,
    grace_period: float = 5.0,
) -> int:
    """Run ``command`` once per cluster task on localhost; return an exit code.

    Every process gets ``os.environ`` with ``PYTHONUNBUFFERED=1``, updated
    by ``env``, and its own ``TF_CONFIG`` (see :func:`cluster_tasks`). Its
    standard output and error are written to
    ``output`` (default: ``sys.stdout`` at call time) line by line, each
    line prefixed ``[worker 0] ``; the launcher's own messages use
    ``[launch] ``.

    The job ends when every process has exited with 0 (with parameter
    servers: when the chief has, since workers and parameter servers serve
    forever; the rest are then stopped). As soon as one process fails, the
    others are stopped: SIGTERM to each process group, SIGKILL after
    ``grace_period`` seconds. SIGINT or SIGTERM sent to the launcher is
    forwarded to every process (when called from the main thread).

    Args:
        command: The program and its arguments, e.g.
            ``[sys.executable, "train.py"]``, the same for every task.
        workers: Number of workers, >= 1.
        ps: Number of parameter servers; with ps > 0 a chief is added.
        env: Extra environment variables for every process.
        timeout: Seconds before everything is stopped; None waits forever.
        output: Text stream for the prefixed output.
        cwd: Working directory of the processes (default: the current one).
        grace_period: Seconds between SIGTERM and SIGKILL when stopping.

    Returns:
        0 if the job succeeded; else the first failing process's exit code
        (128 + N if signal N killed it), 128 + N if the launcher received
        signal N, ``TIMEOUT_EXIT_CODE`` (124) on timeout or
        ``NOT_STARTED_EXIT_CODE`` (127) if the command could not be started.

    Example:

    >>> import sys
    >>> from keras_optsuite.distribute import launch
    >>> launch([sys.executable, "train.py"], workers=2, timeout=600)
    0
    """
    return _launch_tasks(command, cluster_tasks(workers, ps), env, timeout, output, cwd, grace_period,
                         chief_ends_job=ps > 0)


def _launch_tasks(command: Sequence[str], tasks: list[ClusterTask], env: Mapping[str, str] | None,
                  timeout: float | None, output: TextIO | None, cwd: str | os.PathLike[str] | None,
                  grace_period: float, chief_ends_job: bool) -> int:
    if isinstance(command, (str, bytes)) or not command:
        raise ValueError(
            f"command must be a non-empty list of strings (program and arguments), got command={command!r}"
        )
    command = [os.fspath(part) for part in command]
    if timeout is not None:
        timeout = check_positive("timeout", timeout)
    grace_period = check_non_negative("grace_period", grace_period)
    stream = output if output is not None else sys.stdout
    run = _Run(stream)

    received: list[int] = []

    def forward(signum: int, _frame: Any) -> None:
        if not received:
            run.say(f"received {signal.Signals(signum).name}; forwarding it to every process")
        received.append(signum)
        for process in run.processes:
            _signal_group(process, signum)

    previous = _install_handlers(forward)
    try:
        try:
            for task in tasks:
                process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {}), **task.environment()}
                run.start(task, command, process_env, cwd)
        except OSError as error:
            run.say(f"cannot start {command[0]!r}: {error}")
            run.stop(grace_period)
            return NOT_STARTED_EXIT_CODE
        return run.wait(tasks, timeout, grace_period, received, chief_ends_job)
    finally:
        _restore_handlers(previous)
        run.stop(grace_period)
        run.join_readers()


class _Run:
    """The processes of one :func:`launch` and their output readers."""

    def __init__(self, stream: TextIO):
        self.stream = stream
        self.lock = threading.RLock()  # the signal handler may write while the main thread does
        self.processes: list[subprocess.Popen] = []
        self.readers: list[threading.Thread] = []

    def write(self, text: str) -> None:
        with self.lock:
            self.stream.write(text)
            self.stream.flush()

    def say(self, message: str) -> None:
        self.write(f"[launch] {message}\n")

    def start(self, task: ClusterTask, command: list[str], env: dict[str, str], cwd: Any) -> None:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Own process group: terminal signals reach the launcher only (it
            # forwards them), and stopping a task stops its children too.
            start_new_session=True,
        )
        self.processes.append(process)
        reader = threading.Thread(
            target=_copy_lines, args=(process.stdout, f"[{task.name}] ", self.write), daemon=True
        )
        reader.start()
        self.readers.append(reader)

    def wait(self, tasks: list[ClusterTask], timeout: float | None, grace_period: float, received: list[int],
             chief_ends_job: bool) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        signal_deadline = None
        while True:
            codes = [process.poll() for process in self.processes]
            living = sum(code is None for code in codes)
            failed = [(task, code) for task, code in zip(tasks, codes) if code not in (None, 0)]
            if received:
                # Forwarded: give the processes the grace period to exit.
                signal_deadline = signal_deadline or time.monotonic() + grace_period
                if not living or time.monotonic() > signal_deadline:
                    self.stop(0.0)
                    return 128 + received[0]
            elif failed:
                task, code = failed[0]
                self.say(f"{task.name} exited with code {code}; stopping {living} other process(es)")
                self.stop(grace_period)
                return 128 - code if code < 0 else code
            elif not living:
                return 0
            elif chief_ends_job and codes[0] == 0:
                self.say(f"chief 0 finished; stopping the {living} worker and ps process(es)")
                self.stop(grace_period)
                return 0
            if deadline is not None and time.monotonic() > deadline:
                self.say(f"timeout after {timeout:g} s; stopping every process")
                self.stop(grace_period)
                return TIMEOUT_EXIT_CODE
            time.sleep(0.05)

    def stop(self, grace_period: float) -> None:
        """SIGTERM every running process, SIGKILL those still alive after the grace period."""
        living = [process for process in self.processes if process.poll() is None]
        for process in living:
            _signal_group(process, signal.SIGTERM)
        end = time.monotonic() + grace_period
        for process in living:
            try:
                process.wait(timeout=max(0.0, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait()

    def join_readers(self) -> None:
        for reader in self.readers:
            reader.join(timeout=5.0)
        for process in self.processes:
            if process.stdout is not None:
                process.stdout.close()


def _copy_lines(pipe: IO[bytes], prefix: str, write: Callable[[str], None]) -> None:
    try:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace")
            write(prefix + (line if line.endswith("\n") else line + "\n"))
    except (OSError, ValueError):  # the pipe was closed under us
        pass


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _install_handlers(handler: Callable[[int, Any], None]) -> dict[int, Any]:
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def _restore_handlers(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)
