"""Tracking URIs, experiments and fail-fast HTTP (callbacks/_store.py), on real stores.

The embedded SQLite store lives in ``tmp_path``; the server is a real
``mlflow server`` on 127.0.0.1 (module-scoped, see ``mlflow_server.py``).
"""

from __future__ import annotations

import os
import threading
import time

import mlflow
import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from keras_optsuite.callbacks import _store
from mlflow_server import free_port

pytestmark = pytest.mark.xdist_group("tracking_store")  # one worker: one server per module

# A refused connection must fail in well under this (measured: ~5-20 ms).
FAIL_FAST_BOUND_SECONDS = 1.0


# -- URIs -------------------------------------------------------------------


def test_default_tracking_uri_is_an_absolute_sqlite_file_and_creates_its_directory(tmp_path):
    directory = tmp_path / "a" / "mlruns"
    uri = _store.default_tracking_uri(directory)
    assert uri == f"sqlite:///{directory.as_posix()}/mlflow.db"
    assert uri.startswith("sqlite:////")  # absolute path: four slashes
    assert directory.is_dir()


def test_relative_default_directory_is_resolved_against_the_working_directory(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    uri = _store.default_tracking_uri("runs")
    monkeypatch.chdir(tmp_path.parent)  # the URI stays valid after a chdir
    assert _store.sqlite_database_path(uri) == tmp_path / "runs" / "mlflow.db"


def test_resolve_tracking_uri_prefers_explicit_then_environment_then_mlruns(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert _store.resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert _store.resolve_tracking_uri() == "http://127.0.0.1:1"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert not (tmp_path / "mlruns").exists()
    expected = f"sqlite:///{(tmp_path / 'mlruns').as_posix()}/mlflow.db"
    assert _store.resolve_tracking_uri() == expected
    assert (tmp_path / "mlruns").is_dir()


def test_default_journal_path_is_per_store_and_drops_credentials(tmp_path):
    a = _store.default_journal_path("http://127.0.0.1:5000", tmp_path)
    b = _store.default_journal_path("http://127.0.0.1:5001", tmp_path)
    with_password = _store.default_journal_path("http://user:secret@127.0.0.1:5000", tmp_path)
    assert a != b and a.parent == tmp_path / "journals" and a.suffix == ".jsonl"
    assert "127.0.0.1-5000" in a.name
    assert with_password == a
    assert "secret" not in str(with_password)


# -- experiments ------------------------------------------------------------


def test_embedded_store_keeps_database_and_artifacts_in_one_directory(tmp_path, monkeypatch):
    store_directory = tmp_path / "store"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # artifacts must not follow the working directory
    client = mlflow.MlflowClient(_store.default_tracking_uri(store_directory))

    experiment_id = _store.get_or_create_experiment(client, "optimizers / adam")
    assert _store.get_or_create_experiment(client, "optimizers / adam") == experiment_id
    location = client.get_experiment(experiment_id).artifact_location
    assert location.startswith((store_directory / "artifacts").as_uri() + "/")

    run_id = client.create_run(experiment_id).info.run_id
    note = tmp_path / "note.txt"
    note.write_text("hello")
    client.log_artifact(run_id, str(note))
    stored = list(store_directory.rglob("note.txt"))
    assert len(stored) == 1 and stored[0].is_relative_to(store_directory / "artifacts")
    assert sorted(p.name for p in store_directory.iterdir()) == ["artifacts", "mlflow.db"]
    assert list(elsewhere.iterdir()) == []


def test_get_or_create_experiment_when_another_process_wins_the_race(embedded_tracking_uri):
    """Another client creates the experiment between our lookup and our create."""
    rival = mlflow.MlflowClient(embedded_tracking_uri)

    class LateClient(mlflow.MlflowClient):
        lookups = 0

        def get_experiment_by_name(self, name):
            LateClient.lookups += 1
            if LateClient.lookups == 1:  # we look, see nothing, the rival creates it
                rival.create_experiment(name)
                return None
            return super().get_experiment_by_name(name)

    experiment_id = _store.get_or_create_experiment(LateClient(embedded_tracking_uri), "raced")
    assert experiment_id == rival.get_experiment_by_name("raced").experiment_id
    assert LateClient.lookups == 2
    names = [e.name for e in rival.search_experiments()]
    assert names.count("raced") == 1


def test_deleted_experiment_is_reported_not_silently_reused(embedded_tracking_uri):
    client = mlflow.MlflowClient(embedded_tracking_uri)
    experiment_id = _store.get_or_create_experiment(client, "gone")
    client.delete_experiment(experiment_id)
    with pytest.raises(MlflowException, match="restore"):
        _store.get_or_create_experiment(client, "gone")
    with pytest.raises(ValueError, match="name"):
        _store.get_or_create_experiment(client, "")


def test_server_experiment_artifacts_are_decided_by_the_server(mlflow_server):
    client = mlflow.MlflowClient(mlflow_server.uri)
    experiment_id = _store.get_or_create_experiment(client, "on-server")
    assert _store.get_or_create_experiment(client, "on-server") == experiment_id
    location = client.get_experiment(experiment_id).artifact_location
    assert location.startswith(mlflow_server.artifacts.as_uri())


def test_concurrent_creation_on_the_server_yields_one_experiment(mlflow_server):
    barrier = threading.Barrier(4)
    results, errors = [], []

    def create():
        client = mlflow.MlflowClient(mlflow_server.uri)
        barrier.wait()
        try:
            results.append(_store.get_or_create_experiment(client, "concurrent"))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 4 and len(set(results)) == 1
    client = mlflow.MlflowClient(mlflow_server.uri)
    assert [e.name for e in client.search_experiments()].count("concurrent") == 1


# -- reachability and fail-fast HTTP ------------------------------------------


def test_server_is_reachable(mlflow_server, tmp_path):
    assert _store.server_is_reachable(mlflow_server.uri)
    assert _store.server_is_reachable(mlflow_server.uri + "/")
    assert _store.server_is_reachable(_store.default_tracking_uri(tmp_path))
    started = time.monotonic()
    assert not _store.server_is_reachable(f"http://127.0.0.1:{free_port()}", timeout=1.0)
    assert time.monotonic() - started < 1.5


def test_fail_fast_http_is_fast_and_only_on_its_thread(monkeypatch):
    """Inside the block a refused call fails at once; another thread keeps MLflow's retries."""
    # A small retry budget for the *other* thread: 2 retries with backoff
    # factor 1 sleep >= 2 s (urllib3: 0 s, then 1 * 2**1 s), MLflow's
    # default (7 retries, factor 2) would take ~4 minutes (measured 245 s).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    environment_before = dict(os.environ)
    dead_uri = f"http://127.0.0.1:{free_port()}"
    metric = [Metric("loss", 1.0, 0, 0)]
    durations = {}

    def call(label, fail_fast):
        client = mlflow.MlflowClient(dead_uri)
        started = time.monotonic()
        with pytest.raises(MlflowException):
            if fail_fast:
                with _store.fail_fast_http():
                    client.log_batch("0" * 32, metrics=metric, synchronous=True)
            else:
                client.log_batch("0" * 32, metrics=metric, synchronous=True)
        durations[label] = time.monotonic() - started

    patient = threading.Thread(target=call, args=("patient", False))
    patient.start()
    time.sleep(0.05)  # the patient thread is retrying while we fail fast
    call("fast", True)
    patient.join(60)
    assert durations["fast"] < FAIL_FAST_BOUND_SECONDS, durations
    assert durations["patient"] >= 2.0, durations
    assert dict(os.environ) == environment_before
    assert getattr(_store._fail_fast, "settings", None) is None  # restored after the block
