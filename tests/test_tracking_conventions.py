"""MLflowTracking follows MLflow's own conventions (issue 17).

- the experiment: ``experiment=`` wins, then the active run's, then
  ``mlflow.set_experiment``, then ``MLFLOW_EXPERIMENT_NAME`` /
  ``MLFLOW_EXPERIMENT_ID``, then ``keras-optsuite``;
- inside ``with mlflow.start_run():`` the fit logs into that run and leaves
  ending it to its owner; ``nested=True`` and ``parent_run_id=`` make child
  runs, also when the parent is created later by a journal replay;
- runs carry the context tags ``mlflow.start_run`` would set (user, source),
  live and when created by a replay;
- a bad tracking URI fails once, with MLflow's message; a bare ``optsuite
  tracking replay`` sends every journal to its own store, or says which wait
  for which store and exits 1; Ctrl-C ends a script as SIGINT does (130).

Against the embedded SQLite store and a real ``mlflow server`` on 127.0.0.1.
"""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
import textwrap

import keras
import mlflow
import numpy as np
import pytest

from keras_optsuite import cli
from keras_optsuite.callbacks._journal import Journal
from keras_optsuite.callbacks._store import default_journal_path
from keras_optsuite.callbacks.mlflow_tracking import MLflowTracking
from mlflow_server import MlflowServer, free_port

pytestmark = pytest.mark.xdist_group("tracking_conventions")  # one server for the module

ROWS = 192  # 3 steps of 64 per epoch
EPOCHS = 2


def _fit(digits, tracking, epochs=EPOCHS):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:ROWS], y[:ROWS], batch_size=64, epochs=epochs, verbose=0, callbacks=[tracking])
    return model


def _experiment_of(client, run_id):
    return client.get_experiment(client.get_run(run_id).info.experiment_id).name


@pytest.fixture
def store(embedded_tracking_uri):
    """The embedded store, named the MLflow way (``set_tracking_uri``) so fluent runs share it."""
    mlflow.set_tracking_uri(embedded_tracking_uri)
    return mlflow.MlflowClient(embedded_tracking_uri)


# -- experiment resolution ------------------------------------------------------------


def test_the_experiment_is_resolved_as_mlflow_resolves_it(digits, store, monkeypatch):
    def experiment_of_a_fit(**kwargs):
        tracking = MLflowTracking(log_model=False, **kwargs)
        _fit(digits, tracking, epochs=1)
        return _experiment_of(store, tracking.run_id)

    assert experiment_of_a_fit() == "keras-optsuite", "nothing names one"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", store.create_experiment("by-id"))
    assert experiment_of_a_fit() == "by-id"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "by-name")
    assert experiment_of_a_fit() == "by-name", "the name before the id"
    mlflow.set_experiment("digits")
    assert experiment_of_a_fit() == "digits", "set_experiment before the environment"
    assert experiment_of_a_fit(experiment="explicit") == "explicit", "experiment= wins"
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "")
    mlflow.tracking.fluent._active_experiment_id = None
    monkeypatch.setenv("MLFLOW_EXPERIMENT_ID", "999999")
    with pytest.raises(ValueError, match="MLFLOW_EXPERIMENT_ID names experiment id '999999'"):
        experiment_of_a_fit()


# -- the active run -------------------------------------------------------------------


def test_inside_an_active_run_the_fit_logs_into_it_and_leaves_it_running(digits, store):
    mlflow.set_experiment("active")
    with mlflow.start_run(run_name="mine") as run:
        mlflow.log_param("owner_param", "kept")
        tracking = MLflowTracking(log_model=False)
        _fit(digits, tracking)
        assert tracking.run_id == run.info.run_id
        assert store.get_run(run.info.run_id).info.status == "RUNNING", "its owner ends it, not the callback"
        assert mlflow.active_run().info.run_id == run.info.run_id
        second = MLflowTracking(log_model=False)  # a second fit in the same run
        with pytest.warns(UserWarning, match="fit.epochs"):
            _fit(digits, second, epochs=1)
    logged = store.get_run(run.info.run_id)
    assert logged.info.status == "FINISHED"
    assert logged.data.params["owner_param"] == "kept"
    assert logged.data.params["fit.epochs"] == str(EPOCHS), "params cannot change: the first fit's stay"
    assert logged.data.params["optimizer.learning_rate"] == "0.001"
    epochs = sorted((m.step, m.value) for m in store.get_metric_history(run.info.run_id, "epoch"))
    assert epochs == [(3, 1), (3, 1), (6, 2)], "both fits' epochs (the second fit's model starts at step 0)"
    assert len(store.search_runs([logged.info.experiment_id])) == 1, "no second run was opened"
    with mlflow.start_run(), pytest.raises(ValueError, match="active MLflow run .* is in experiment 'active'"):
        _fit(digits, MLflowTracking(experiment="other", log_model=False))


def test_nested_and_parent_run_id_make_child_runs_in_the_parents_experiment(digits, store):
    mlflow.set_experiment("parents")
    with mlflow.start_run() as parent:
        nested = MLflowTracking(nested=True, run_name="nested-child", log_model=False)
        _fit(digits, nested, epochs=1)
    explicit = MLflowTracking(parent_run_id=parent.info.run_id, run_name="explicit-child", log_model=False)
    _fit(digits, explicit, epochs=1)
    for tracking in (nested, explicit):
        child = store.get_run(tracking.run_id)
        assert tracking.run_id != parent.info.run_id
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.experiment_id == parent.info.experiment_id
        assert child.info.status == "FINISHED"
    with pytest.raises(ValueError, match="not both"):
        MLflowTracking(nested=True, parent_run_id=parent.info.run_id)


def test_runs_carry_the_context_tags_of_mlflow_start_run(digits, store):
    tracking = MLflowTracking(experiment="context", log_model=False, tags={"team": "optim"})
    _fit(digits, tracking, epochs=1)
    tags = store.get_run(tracking.run_id).data.tags
    assert tags["mlflow.user"] == getpass.getuser()
    assert tags["mlflow.source.type"] == "LOCAL"
    assert tags["mlflow.source.name"] == mlflow.tracking.context.default_context._get_source_name()
    assert tags["team"] == "optim"


# -- the journal: a child of a parent created later, and context tags by replay -------


@pytest.mark.slow
def test_a_child_of_a_pending_parent_is_created_after_it_by_the_replay(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    port = free_port()
    uri = f"http://127.0.0.1:{port}"  # nothing listens there yet
    parent = MLflowTracking(experiment="offline-family", run_name="parent", tracking_uri=uri, flush_timeout=1,
                            log_model=False)
    _fit(digits, parent, epochs=1)
    child = MLflowTracking(parent_run_id=parent.run_id, run_name="child", tracking_uri=uri, flush_timeout=1,
                           log_model=False)
    _fit(digits, child, epochs=1)
    assert parent.run_id.startswith("pending-") and child.run_id.startswith("pending-")
    assert (tmp_path / "mlruns" / "mlflow.db").exists() is False

    assert cli.main(["tracking", "replay"]) == 1, "records remain while the server is down"
    output = capsys.readouterr().out
    assert f"sent 0 records to {uri}" in output and "remain" in output
    assert not (tmp_path / "mlruns" / "mlflow.db").exists(), "a replay creates no empty store"

    with MlflowServer(tmp_path / "server", port=port) as server:
        assert cli.main(["tracking", "replay"]) == 0
        output = capsys.readouterr().out
        sent = [line for line in output.splitlines() if f"records to {uri}; 0 remain" in line]
        assert len(sent) == 1 and "sent 0 records" not in sent[0], output
        client = mlflow.MlflowClient(server.uri)
        parent_run, child_run = client.get_run(parent.run_id), client.get_run(child.run_id)
        assert not parent.run_id.startswith("pending-"), "the real ids once created"
        assert child_run.data.tags["mlflow.parentRunId"] == parent.run_id
        assert child_run.info.experiment_id == parent_run.info.experiment_id
        assert _experiment_of(client, child.run_id) == "offline-family"
        for run in (parent_run, child_run):
            assert run.info.status == "FINISHED"
            assert run.data.tags["mlflow.user"] == getpass.getuser(), "context tags survive the replay"
            assert run.data.tags["mlflow.source.type"] == "LOCAL"
        assert cli.main(["tracking", "replay"]) == 0
        assert "every journal is replayed (1 checked)" in capsys.readouterr().out


def test_a_bare_replay_sends_each_journal_to_its_own_store_and_names_unknown_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    stores = [f"sqlite:///{(tmp_path / name).as_posix()}.db" for name in ("a", "b")]
    run_ids = []
    for uri in stores:
        client = mlflow.MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("e")).info.run_id
        Journal(default_journal_path(uri), tracking_uri=uri).append(
            {"kind": "metrics", "run_id": run_id, "metrics": [["m", 1.0, 1700000000000, 0]]}
        )
        run_ids.append(run_id)
    orphan = Journal(tmp_path / "mlruns" / "journals" / "orphan.jsonl")  # no .uri beside it
    orphan.append({"kind": "metrics", "run_id": run_ids[0], "metrics": [["m", 2.0, 1700000000001, 1]]})

    assert cli.main(["tracking", "replay"]) == 1, "the orphan's records remain"
    output = capsys.readouterr().out
    for uri, run_id in zip(stores, run_ids):
        assert f"sent 1 records to {uri}" in output
        assert [m.value for m in mlflow.MlflowClient(uri).get_metric_history(run_id, "m")] == [1.0]
    assert f"{orphan.path}: 1 records wait for a store this journal does not name" in output
    assert f"--journal {orphan.path} --tracking-uri URI" in output
    assert cli.main(["tracking", "replay", "--journal", str(orphan.path), "--tracking-uri", stores[0]]) == 0
    assert [m.value for m in mlflow.MlflowClient(stores[0]).get_metric_history(run_ids[0], "m")] == [1.0, 2.0]


# -- errors that name the real problem --------------------------------------------------


def test_a_bad_tracking_uri_fails_once_with_mlflows_message(digits, tmp_path, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MlflowException) as raised:
        with MLflowTracking(tracking_uri="htp://127.0.0.1:9") as tracking:
            _fit(digits, tracking, epochs=1)
    assert "unsupported URI 'htp://127.0.0.1:9'" in str(raised.value)
    import traceback

    chain = "".join(traceback.format_exception(raised.value))
    assert "_log_artifacts" not in chain and "terminate" not in chain, "nothing of ours ran after it"
    assert tracking.run_id is None
    assert "Traceback" not in capsys.readouterr().err


_INTERRUPTED_SCRIPT = """
import os, signal
import numpy as np, keras
from keras_optsuite.callbacks.mlflow_tracking import MLflowTracking
class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C
tracking = MLflowTracking(experiment="interrupted", log_model=False)
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
x = np.ones((32, 4), "float32")
model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[tracking, Interrupt()])
"""


@pytest.mark.slow
def test_ctrl_c_without_the_context_manager_exits_as_sigint_and_ends_the_run_killed(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_INTERRUPTED_SCRIPT))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "OMP_NUM_THREADS": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True,
                             text=True, timeout=180)
    assert process.returncode == -signal.SIGINT, (process.returncode, process.stderr[-2000:])  # 130 in a shell
    assert "KeyboardInterrupt" in process.stderr
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("interrupted").experiment_id])
    assert run.info.status == "KILLED"
    assert np.isfinite(run.data.metrics["loss"])


def test_a_monitor_that_names_no_metric_is_said_once_and_no_best_model_is_logged(digits, store):
    tracking = MLflowTracking(experiment="monitor", monitor="val_acc", log_model=False)
    with pytest.warns(UserWarning, match=r"monitor='val_acc' is not an epoch metric of this fit \(loss\)") as seen:
        _fit(digits, tracking)
    assert len([w for w in seen if "monitor=" in str(w.message)]) == 1, "once, not every epoch"
    artifacts = {a.path for a in store.list_artifacts(tracking.run_id, "model")}
    assert artifacts == {"model/final.keras"}, "no best model"
