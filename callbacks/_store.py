"""Where tracking data goes: the tracking URI, the experiment, and fail-fast HTTP.

Two stores are supported:

- **Embedded (default).** With no ``MLFLOW_TRACKING_URI``, runs go to a
  SQLite database ``mlruns/mlflow.db`` in the working directory, with the
  artifacts beside it in ``mlruns/artifacts/`` (MLflow 3.17 refuses the old
  plain-file store). Open the UI with
  ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``.
- **Server.** ``MLFLOW_TRACKING_URI=http://host:port`` sends everything to an
  ``mlflow server``; the server decides where artifacts go.

MLflow retries a failing HTTP request 7 times with exponential backoff
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES=7``, ``..._BACKOFF_FACTOR=2``, timeout 120 s):
a single call to a stopped server blocks for minutes. :func:`fail_fast_http`
turns that off for the calling thread only, so the background sender of
:class:`keras_optsuite.callbacks._journal.Sink` notices an outage at once and
spools to its journal instead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

DEFAULT_DIRECTORY = "mlruns"
"""Directory (relative to the working directory) of the embedded store."""

DATABASE_NAME = "mlflow.db"
ARTIFACTS_DIRECTORY_NAME = "artifacts"
JOURNALS_DIRECTORY_NAME = "journals"

_HTTP_SCHEMES = ("http", "https")


def default_tracking_uri(directory: str | os.PathLike = DEFAULT_DIRECTORY) -> str:
    """The embedded store: ``sqlite:///<absolute directory>/mlflow.db``.

    Creates ``directory`` if needed. A relative ``directory`` is resolved
    against the current working directory now, so the URI stays valid after
    a later ``chdir``.

    Example:
    >>> default_tracking_uri("/tmp/experiments")
    'sqlite:////tmp/experiments/mlflow.db'
    """
    root = Path(directory).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    return "sqlite:///" + (root / DATABASE_NAME).as_posix()


def resolve_tracking_uri(explicit: str | None = None) -> str:
    """The tracking URI to use: ``explicit``, else MLflow's own, else the embedded store.

    MLflow's own is what ``mlflow.get_tracking_uri()`` answers once a URI is
    set: by ``mlflow.set_tracking_uri`` (which wins, as in MLflow) or by
    ``MLFLOW_TRACKING_URI``. Without either, the embedded store is
    :func:`default_tracking_uri` under ``./mlruns`` (created on first use),
    not MLflow's ``sqlite:///mlflow.db``. Reads MLflow's state, never
    changes it.

    Example:
    >>> resolve_tracking_uri("http://127.0.0.1:5000")
    'http://127.0.0.1:5000'
    """
    if explicit:
        return explicit
    mlflow = sys.modules.get("mlflow")  # not imported: set_tracking_uri cannot have been called
    if mlflow is not None and mlflow.is_tracking_uri_set():
        uri = str(mlflow.get_tracking_uri()).strip()
    else:
        uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or default_tracking_uri()


def is_http_uri(tracking_uri: str) -> bool:
    """True for an ``http://`` or ``https://`` tracking server."""
    return urllib.parse.urlparse(tracking_uri).scheme.lower() in _HTTP_SCHEMES


def sqlite_database_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///...`` URI, None for other stores or in-memory SQLite."""
    if urllib.parse.urlparse(tracking_uri).scheme.lower() != "sqlite":
        return None
    from sqlalchemy.engine import make_url

    database = make_url(tracking_uri).database
    if not database or database == ":memory:":
        return None
    return Path(database).absolute()


def _artifact_location_for(tracking_uri: str, experiment_name: str) -> str | None:
    database = sqlite_database_path(tracking_uri)
    if database is None:
        return None  # a server, or a database we do not own: MLflow decides
    # One folder per experiment name: readable, and stable across a
    # create-race (both processes compute the same location).
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", experiment_name).strip("-.")[:60] or "experiment"
    digest = hashlib.sha1(experiment_name.encode("utf-8")).hexdigest()[:8]
    return (database.parent / ARTIFACTS_DIRECTORY_NAME / f"{slug}-{digest}").as_uri()


def get_or_create_experiment(client: Any, name: str) -> str:
    """The id of the experiment called ``name``, created if it does not exist.

    On a SQLite store the experiment's artifacts go beside the database
    (``<dir>/artifacts/<name>-<hash>/``, a ``file://`` URI), so one directory
    holds the whole embedded store; on a server the server decides. If
    another process creates the same experiment at the same moment, its id
    is returned. A *deleted* experiment of that name raises
    ``MlflowException``: restore it (``client.restore_experiment``) or delete
    it permanently first.

    Args:
        client: an ``mlflow.MlflowClient``.
        name: the experiment name.

    Example:
    >>> client = mlflow.MlflowClient(default_tracking_uri("/tmp/experiments"))
    >>> experiment_id = get_or_create_experiment(client, "optimizers")
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got name={name!r}")
    from mlflow.exceptions import MlflowException

    def existing() -> str | None:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return None
        if experiment.lifecycle_stage != "active":
            raise MlflowException(
                f"Experiment {name!r} (id {experiment.experiment_id}) is deleted: restore it "
                "with MlflowClient().restore_experiment(id) or delete it permanently "
                "(mlflow gc) before logging to that name again."
            )
        return experiment.experiment_id

    found = existing()
    if found is not None:
        return found
    try:
        return client.create_experiment(
            name, artifact_location=_artifact_location_for(client.tracking_uri, name)
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # Lost the race: another process created it between our lookup and create.
    found = existing()
    if found is None:  # pragma: no cover - deleted again in between
        raise MlflowException(f"Experiment {name!r} exists but could not be read back")
    return found


def server_is_reachable(tracking_uri: str, timeout: float = 2.0) -> bool:
    """True if the tracking store answers.

    For ``http(s)`` URIs: ``GET <uri>/health`` answers 200 within
    ``timeout`` seconds. Other stores (SQLite, databases) are local or not
    checkable cheaply: always True.

    Example:
    >>> server_is_reachable("http://127.0.0.1:1")
    False
    """
    if not is_http_uri(tracking_uri):
        return True
    import requests

    url = tracking_uri.rstrip("/") + "/health"
    try:
        response = requests.get(url, timeout=timeout)
    except requests.RequestException:
        return False
    return response.status_code == 200


def without_credentials(tracking_uri: str) -> str:
    """``tracking_uri`` with any ``user:password@`` removed (what may be written to disk).

    Example:
    >>> without_credentials("http://user:secret@127.0.0.1:5000")
    'http://127.0.0.1:5000'
    """
    parts = urllib.parse.urlsplit(tracking_uri)
    if not (parts.username or parts.password):
        return tracking_uri  # urlunsplit would drop a slash of sqlite:////absolute/path
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=host))


def default_journal_path(
    tracking_uri: str, directory: str | os.PathLike = DEFAULT_DIRECTORY
) -> Path:
    """Where records for ``tracking_uri`` are spooled while it is unreachable.

    One journal per tracking store, named after it (credentials removed):
    ``<directory>/journals/<store>-<hash>.jsonl``. A journal only holds
    records of runs in that store, so replaying it elsewhere is never needed.

    Example:
    >>> default_journal_path("http://127.0.0.1:5000").name
    'http-127.0.0.1-5000-...jsonl'
    """
    safe_uri = without_credentials(tracking_uri)
    slug = re.sub(r"[^A-Za-z0-9._]+", "-", safe_uri).strip("-.")[-60:].strip("-.") or "store"
    digest = hashlib.sha1(safe_uri.encode("utf-8")).hexdigest()[:8]
    return Path(directory).absolute() / JOURNALS_DIRECTORY_NAME / f"{slug}-{digest}.jsonl"


# ---------------------------------------------------------------------------
# Fail-fast HTTP, per thread.

_fail_fast = threading.local()
_install_lock = threading.Lock()
_installed = False

FAIL_FAST_CONNECT_TIMEOUT = 2.0
FAIL_FAST_READ_TIMEOUT = 15.0


def _install_fail_fast_hook() -> None:
    """Wrap ``mlflow.utils.rest_utils.http_request`` once.

    Every REST call of the tracking and registry clients goes through
    ``rest_utils.call_endpoint`` -> ``rest_utils.http_request``, which reads
    the retry settings from the environment when its arguments are None; the
    server's artifact repository (``mlflow-artifacts:``) imported the same
    function by name, so its binding is replaced too. The wrapper fills
    those arguments in only on threads inside :func:`fail_fast_http`;
    everywhere else it passes calls through unchanged.
    """
    # The one process-wide change this package makes to MLflow: a wrapper
    # that is a pass-through except on threads inside fail_fast_http (the
    # tracking sink's sender, the end-of-run uploads), which a user's own
    # MLflow calls never are.
    global _installed
    with _install_lock:
        if _installed:
            return
        from mlflow.utils import rest_utils

        original = rest_utils.http_request

        @functools.wraps(original)
        def http_request(host_creds, endpoint, method, *args, **kwargs):
            settings = getattr(_fail_fast, "settings", None)
            if settings is not None and not args:
                for name, value in settings.items():
                    if kwargs.get(name) is None:
                        kwargs[name] = value
            return original(host_creds, endpoint, method, *args, **kwargs)

        http_request.__wrapped_by_keras_optsuite__ = True  # type: ignore[attr-defined]  # a marker
        rest_utils.http_request = http_request
        from mlflow.store.artifact import http_artifact_repo

        if http_artifact_repo.http_request is original:
            http_artifact_repo.http_request = http_request
        _installed = True


@contextlib.contextmanager
def fail_fast_http(
    connect_timeout: float = FAIL_FAST_CONNECT_TIMEOUT,
    read_timeout: float = FAIL_FAST_READ_TIMEOUT,
) -> Iterator[None]:
    """Within this block, on this thread only, MLflow REST calls fail at once instead of retrying.

    MLflow's defaults (7 retries, backoff factor 2, 120 s timeout, read from
    ``MLFLOW_HTTP_REQUEST_*`` on every request) make one call to a stopped
    server block for minutes (measured: ``log_batch`` to a closed port on
    127.0.0.1 raised after 245 s). Inside this block a tracking call makes a
    single attempt: a refused connection fails in milliseconds (measured:
    median 2 ms, worst 19 ms), an unreachable host after ``connect_timeout``
    seconds, a hung server after ``read_timeout`` seconds. Other threads, and arguments a caller passes
    explicitly, are unaffected; the environment is not modified. Uploads to
    a server's artifact store (``mlflow-artifacts:``) fail fast too.

    Example:
    >>> with fail_fast_http():
    ...     client.log_batch(run_id, metrics=[...])  # raises MlflowException quickly if down
    """
    _install_fail_fast_hook()
    previous = getattr(_fail_fast, "settings", None)
    _fail_fast.settings = {
        "max_retries": 0,
        "backoff_factor": 0,
        "backoff_jitter": 0.0,
        "timeout": (float(connect_timeout), float(read_timeout)),
        # Only used by the Databricks SDK path; keep it bounded too.
        "retry_timeout_seconds": max(1, int(connect_timeout + read_timeout)),
    }
    try:
        yield
    finally:
        _fail_fast.settings = previous
