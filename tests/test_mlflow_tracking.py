"""MLflowTracking leaves every run with the same complete record, and never RUNNING.

Against the embedded SQLite store (in a temporary working directory) and a
real ``mlflow server`` on 127.0.0.1 (``tests/mlflow_server.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from keras_optsuite.callbacks._run_params import flatten, is_secret
from keras_optsuite.callbacks.mlflow_tracking import MLflowTracking, is_chief
from keras_optsuite.layers import DropPath
from keras_optsuite.optimizers import Lookahead, RAdam
from keras_optsuite.schedules import OneCycle


EPOCHS = 3
BATCH = 64
EVERY = 5


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(16, activation="tanh")(inputs)
    hidden = DropPath(0.125, name="drop")(hidden)
    return keras.Model(inputs, keras.layers.Dense(10)(hidden))


def _train(digits, tracking, optimizer=None, callbacks=None, **fit):
    x, y = digits
    model = _model()
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, validation_split=0.25, verbose=0,
                        callbacks=callbacks or [tracking], **fit)
    return model, history


def _metric(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def _artifacts(client, run_id, path=None):
    found = []
    for item in client.list_artifacts(run_id, path):
        found.extend(_artifacts(client, run_id, item.path) if item.is_dir else [item.path])
    return sorted(found)


def _check_complete_record(client, run_id, model, history, digits):
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    # params: fit settings, the optimizer's whole config, counts, layer rates, versions
    assert params["fit.epochs"] == str(EPOCHS)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert params["model.trainable_params"] == str(trainable)
    assert params["regularization.drop.rate"] == "0.125"
    assert params["distribution.replicas"] == "1"
    assert params["version.keras"] == keras.__version__
    # the fit and compile settings
    train_samples = int(np.floor(0.75 * len(digits[0])))  # Keras's validation_split
    steps_per_epoch = int(np.ceil(train_samples / BATCH))
    assert params["fit.batch_size"] == str(BATCH) and params["fit.steps_per_epoch"] == str(steps_per_epoch)
    assert params["fit.validation"] == "split" and params["fit.validation_split"] == "0.25"
    assert params["fit.train_samples"] == str(train_samples)
    assert params["fit.validation_samples"] == str(len(digits[0]) - train_samples)
    assert params["fit.initial_epoch"] == "0" and params["fit.sample_weight"] == "false"
    assert params["compile.loss.class_name"] == "SparseCategoricalCrossentropy"
    assert params["compile.metrics"] == '["accuracy"]'
    assert params["optimizer.learning_rate"] == "0.001", "as written, not float32 noise"
    assert params["distribution.strategy"] == "one device"
    assert "None" not in params.values(), "unset options are omitted"
    # metrics, all on one axis (optimizer steps): each epoch's train and validation values at
    # the step that ends it, with the epoch beside them
    epoch_ends = [steps_per_epoch * (epoch + 1) for epoch in range(EPOCHS)]
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        logged = _metric(client, run_id, key)
        assert [step for step, _ in logged] == epoch_ends, key
        np.testing.assert_allclose([v for _, v in logged], history.history[key], rtol=1e-6)
    assert _metric(client, run_id, "epoch") == [(step, epoch + 1) for epoch, step in enumerate(epoch_ends)]
    # batch metrics and telemetry every EVERY optimizer steps
    expected_steps = [s for s in range(1, EPOCHS * steps_per_epoch + 1) if s % EVERY == 0]
    for key in ("batch.loss", "learning_rate", "gradient_norm", "update_norm", "update_to_weight_ratio"):
        assert [step for step, _ in _metric(client, run_id, key)] == expected_steps, key
    assert all(value > 0 for _, value in _metric(client, run_id, "update_norm"))
    assert all(value > 0 for _, value in _metric(client, run_id, "gradient_norm"))
    # artifacts
    assert _artifacts(client, run_id) == sorted([
        "history.csv", "learning_curves.png", "model/best.keras", "model/final.keras",
        "model_summary.txt", "optimizer.json",
    ])
    return run


def test_embedded_store_gets_the_complete_record(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tracking = MLflowTracking(experiment="digits", run_name="adam", log_every_n_steps=EVERY,
                              training_data=digits, seed=7)
    model, history = _train(digits, tracking)
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    run = _check_complete_record(client, tracking.run_id, model, history, digits)
    assert run.data.params["seed"] == "7"
    assert run.info.run_name == "adam"
    learning_rates = [value for _, value in _metric(client, tracking.run_id, "learning_rate")]
    assert learning_rates and all(value == pytest.approx(1e-3) for value in learning_rates)
    dataset = run.inputs.dataset_inputs[0].dataset
    assert dataset.digest and "1797" in dataset.profile  # digest and shape
    artifacts_root = tmp_path / "mlruns"
    assert any(artifacts_root.rglob("final.keras")), "artifacts live under mlruns/"
    # the final and best models are MLflow logged models of the run's experiment, with a signature
    outputs = {client.get_logged_model(o.model_id).name: o for o in run.outputs.model_outputs}
    assert sorted(outputs) == ["best", "final"]
    final = client.get_logged_model(outputs["final"].model_id)
    assert final.experiment_id == run.info.experiment_id and final.source_run_id == tracking.run_id
    assert outputs["final"].step == int(model.optimizer.iterations.numpy())
    linked = {m.key: m.value for m in final.metrics or [] if m.step == outputs["final"].step}
    assert linked.get("loss") == pytest.approx(history.history["loss"][-1], rel=1e-6), "the last epoch's metrics"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    info = mlflow.models.get_model_info(f"models:/{final.model_id}")
    assert info.signature.inputs.inputs[0].shape == (-1, 64)
    assert info.signature.outputs.inputs[0].shape == (-1, 10)
    assert info.saved_input_example_info is not None
    loaded = mlflow.keras.load_model(f"models:/{final.model_id}")
    np.testing.assert_allclose(loaded.predict(digits[0][:8], verbose=0), model.predict(digits[0][:8], verbose=0),
                               rtol=1e-6, atol=1e-6)


def test_real_server_gets_the_complete_record(digits, tmp_path, monkeypatch, mlflow_server):
    monkeypatch.chdir(tmp_path)
    tracking = MLflowTracking(experiment="digits-server", tracking_uri=mlflow_server.uri, log_every_n_steps=EVERY)
    model, history = _train(digits, tracking)
    client = mlflow.MlflowClient(mlflow_server.uri)
    _check_complete_record(client, tracking.run_id, model, history, digits)
    best = client.download_artifacts(tracking.run_id, "model/best.keras", str(tmp_path))
    reloaded = keras.models.load_model(best)
    x, y = digits
    split = int(np.floor(0.75 * len(x)))  # Keras's validation_split
    reloaded.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = reloaded.evaluate(x[split:], y[split:], verbose=0, batch_size=BATCH, return_dict=True)["loss"]
    assert loss == pytest.approx(min(history.history["val_loss"]), rel=1e-4), "best.keras is the best epoch's"


def test_wrapped_optimizer_and_schedule_are_flattened_with_dotted_keys(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracking = MLflowTracking(experiment="wrapped", log_every_n_steps=EVERY)
    optimizer = Lookahead(RAdam(OneCycle(1e-2, total_steps=100)), sync_period=4)
    _train(digits, tracking, optimizer=optimizer)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    params = client.get_run(tracking.run_id).data.params
    assert params["optimizer.class_name"] == "Lookahead"
    assert params["optimizer.sync_period"] == "4"
    assert params["optimizer.inner.class_name"] == "RAdam"
    assert params["optimizer.inner.learning_rate.class_name"] == "OneCycle"
    assert params["optimizer.inner.learning_rate.maximal_learning_rate"] == "0.01"
    # the learning rate logged is the one the schedule applied at that step
    logged = _metric(client, tracking.run_id, "learning_rate")
    schedule = OneCycle(1e-2, total_steps=100)
    for step, value in logged:
        assert value == pytest.approx(float(schedule(step - 1)), rel=1e-6)


def test_secrets_are_redacted_by_key():
    assert is_secret("password") and is_secret("api_key") and is_secret("aws.secret") and is_secret("auth_token")
    assert not is_secret("tokens_per_batch") and not is_secret("monkey") and not is_secret("keep_prob")
    flat = flatten({"db": {"password": "hunter2", "host": "h"}, "api_key": "abc", "rate": 0.5}, "cfg")
    assert flat == {"cfg.db.password": "<redacted>", "cfg.db.host": "h", "cfg.api_key": "<redacted>", "cfg.rate": "0.5"}


def _fit_inside_the_context(digits, tracking, stopper, error):
    """``with tracking: fit(...)`` with a callback that raises ``error``; the embedded store's client."""
    with pytest.raises(error), tracking:
        x, y = digits
        model = _model()
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=EPOCHS, verbose=0, callbacks=[tracking, stopper])
    return mlflow.MlflowClient("sqlite:///" + os.path.abspath("mlruns/mlflow.db"))


def test_failure_inside_the_context_ends_the_run_failed_with_its_traceback(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Explode(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("loss went to the moon")

    tracking = MLflowTracking(experiment="failures")
    client = _fit_inside_the_context(digits, tracking, Explode(), RuntimeError)
    assert client.get_run(tracking.run_id).info.status == "FAILED"
    text = Path(client.download_artifacts(tracking.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "loss went to the moon" in text
    assert [value for _, value in _metric(client, tracking.run_id, "epoch")] == [1, 2], "metrics up to the failure"
    # the best model, kept in memory during training, is written when the run ends FAILED too
    assert "model/best.keras" in _artifacts(client, tracking.run_id)


def test_keyboard_interrupt_ends_the_run_killed(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            raise KeyboardInterrupt

    tracking = MLflowTracking(experiment="interrupts")
    client = _fit_inside_the_context(digits, tracking, Interrupt(), KeyboardInterrupt)
    assert client.get_run(tracking.run_id).info.status == "KILLED"


def test_only_the_chief_logs(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert is_chief()
    cluster = {"worker": ["localhost:1", "localhost:2"]}
    monkeypatch.setenv("TF_CONFIG", f'{{"cluster": {cluster}, "task": {{"type": "worker", "index": 1}}}}'.replace("'", '"'))
    assert not is_chief()
    monkeypatch.setenv("TF_CONFIG", f'{{"cluster": {cluster}, "task": {{"type": "worker", "index": 0}}}}'.replace("'", '"'))
    assert is_chief()
    with_chief = {"chief": ["localhost:3"], **cluster}
    monkeypatch.setenv("TF_CONFIG", f'{{"cluster": {with_chief}, "task": {{"type": "worker", "index": 0}}}}'.replace("'", '"'))
    assert not is_chief()


def test_a_non_chief_worker_creates_no_run(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    tracking = MLflowTracking(experiment="workers")
    _train(digits, tracking)
    assert tracking.run_id is None
    assert not (tmp_path / "mlruns").exists()


_SCRIPT = """
import os, sys, time
import numpy as np, keras
from keras_optsuite.callbacks.mlflow_tracking import MLflowTracking
mode = sys.argv[1]
class Hook(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if mode == "raise":
            raise ValueError("uncaught in a script")
        print("EPOCH", epoch, flush=True)
        time.sleep(60)
tracking = MLflowTracking(experiment="scripts")
model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
model.compile(optimizer="sgd", loss="mse")
x = np.ones((32, 4), "float32")
print("RUN", flush=True)
model.fit(x, x[:, :1], epochs=3, verbose=0, callbacks=[tracking, Hook()])
"""


def _script(tmp_path, mode):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(_SCRIPT))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.Popen([sys.executable, str(script), mode], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _only_run(tmp_path):
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("scripts").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


@pytest.mark.slow
def test_uncaught_exception_in_a_script_ends_the_run_failed(tmp_path):
    process = _script(tmp_path, "raise")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0 and "uncaught in a script" in stderr
    client, run = _only_run(tmp_path)
    assert run.info.status == "FAILED"
    text = Path(client.download_artifacts(run.info.run_id, "traceback.txt", str(tmp_path))).read_text()
    assert "uncaught in a script" in text


@pytest.mark.slow
def test_sigterm_ends_the_run_killed(tmp_path):
    process = _script(tmp_path, "sleep")
    deadline = time.monotonic() + 120
    for line in process.stdout:
        if line.startswith("EPOCH") or time.monotonic() > deadline:
            break
    process.terminate()
    process.wait(timeout=60)
    assert process.returncode != 0
    _, run = _only_run(tmp_path)
    assert run.info.status == "KILLED"


class _Clock(keras.callbacks.Callback):
    """Notes when ``on_train_end`` reaches it: one before and one after the tracking callback time its end."""

    def on_train_end(self, logs=None):
        self.ended = time.monotonic()


class _StopServerAfterTraining(keras.callbacks.Callback):
    """Stops the server after the last epoch: the run's end finds it down."""

    def __init__(self, server):
        super().__init__()
        self.server = server

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.params["epochs"] - 1:
            self.server.stop()


def _train_timing_the_end(digits, tracking, *more):
    before, after = _Clock(), _Clock()
    model, history = _train(digits, tracking, callbacks=[before, tracking, after, *more])
    return model, history, after.ended - before.ended


def _unsent_files(journal_path):
    return sorted(p.relative_to(journal_path.parent) for p in journal_path.parent.rglob("unsent-artifacts/**/*")
                  if p.is_file())


def test_an_unreachable_server_at_the_start_does_not_stop_training_and_names_it(digits, tmp_path, monkeypatch,
                                                                                capsys):
    from mlflow_server import free_port

    from keras_optsuite.callbacks._journal import Journal

    monkeypatch.chdir(tmp_path)
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    journal_path = tmp_path / "journals" / "down.jsonl"
    tracking = MLflowTracking(experiment="down", tracking_uri=uri, journal_path=journal_path, flush_timeout=2,
                              log_every_n_steps=EVERY)
    _, history, end_seconds = _train_timing_the_end(digits, tracking)
    assert len(history.history["loss"]) == EPOCHS
    assert end_seconds < 2 + 3, f"the run's end took {end_seconds:.1f} s"
    stderr = capsys.readouterr().err
    assert stderr.count(f"the MLflow tracking server at {uri} does not answer") == 1, "warned once, naming it"
    assert str(journal_path) in stderr
    assert "no MLflow logged models" in stderr
    assert tracking.run_id.startswith("pending-")
    records = Journal(journal_path).pending()
    assert records[0]["kind"] == "create_run" and records[0]["experiment"] == "down"
    assert {r["run_id"] for r in records} == {tracking.run_id}
    assert [r["kind"] for r in records[-2:]] == ["artifacts", "terminate"] and records[-1]["status"] == "FINISHED"
    assert sorted(p.name for p in Path(records[-2]["directory"]).rglob("*") if p.is_file()) == sorted([
        "best.keras", "final.keras", "history.csv", "learning_curves.png", "model_summary.txt", "optimizer.json"])
    epochs = [m[1] for r in records if r["kind"] == "metrics" for m in r["metrics"] if m[0] == "epoch"]
    assert epochs == list(range(1, EPOCHS + 1))


def _replay(uri, journal_path, capsys):
    from keras_optsuite import cli

    status = cli.main(["tracking", "replay", "--journal", str(journal_path), "--tracking-uri", uri])
    return status, capsys.readouterr().out


def _runs(client, experiment):
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id])


@pytest.mark.slow
def test_an_outage_at_the_start_or_at_the_end_is_replayed_into_one_complete_run(digits, tmp_path, monkeypatch,
                                                                                mlflow_server, capsys):
    """One outage: a run that ends during it (artifacts kept) and one that starts during it (a pending run)."""
    monkeypatch.chdir(tmp_path)
    uri, journal_path = mlflow_server.uri, tmp_path / "journals" / "server.jsonl"
    options = dict(tracking_uri=uri, journal_path=journal_path, log_every_n_steps=EVERY, flush_timeout=3)
    client = mlflow.MlflowClient(uri)
    try:
        ended_down = MLflowTracking(experiment="outage-at-the-end", log_model=False, **options)
        end_model, end_history, _ = _train_timing_the_end(digits, ended_down, _StopServerAfterTraining(mlflow_server))
        assert "artifacts not uploaded" in capsys.readouterr().err

        started_down = MLflowTracking(experiment="outage-at-the-start", training_data=digits, **options)
        model, history, end_seconds = _train_timing_the_end(digits, started_down)
        assert end_seconds < 3 + 3, f"the run's end took {end_seconds:.1f} s"
        assert started_down.run_id.startswith("pending-")
        assert "no MLflow logged models" in capsys.readouterr().err
        assert _replay(uri, journal_path, capsys)[0] == 1, "nothing can be sent while the server is down"
    finally:
        mlflow_server.start()

    status, output = _replay(uri, journal_path, capsys)
    assert status == 0 and "; 0 remain" in output
    (run,) = _runs(client, "outage-at-the-start")
    assert started_down.run_id == run.info.run_id, "run_id is the real id once the run exists"
    _check_complete_record(client, run.info.run_id, model, history, digits)
    assert run.inputs.dataset_inputs[0].dataset.digest, "the training data, recorded offline"
    assert _runs(client, "outage-at-the-end")[0].info.run_id == ended_down.run_id
    _check_complete_record(client, ended_down.run_id, end_model, end_history, digits)
    assert _unsent_files(journal_path) == [], "uploaded copies are deleted"

    status, output = _replay(uri, journal_path, capsys)  # again: nothing to send, no second run
    assert status == 0 and "every journal is replayed" in output
    assert len(_runs(client, "outage-at-the-start")) == 1 and len(_runs(client, "outage-at-the-end")) == 1


@pytest.mark.slow
def test_a_job_started_offline_resumes_the_same_run_offline_and_online(tmp_path, monkeypatch, mlflow_server, capsys):
    """Interrupted twice while the server is down, finished after it is back: one run, every step once."""
    from workers.resume_training import train

    from keras_optsuite.callbacks._store import default_journal_path

    monkeypatch.chdir(tmp_path)
    uri = mlflow_server.uri
    client = mlflow.MlflowClient(uri)
    try:
        mlflow_server.stop()
        with pytest.raises(KeyboardInterrupt):
            first, _ = train(str(tmp_path), uri, stop_at=15, how="interrupt")  # in epoch 1
        with pytest.raises(KeyboardInterrupt):
            train(str(tmp_path), uri, stop_at=25, how="interrupt")  # restored at epoch 1, stopped in epoch 2
    finally:
        mlflow_server.start()
    assert _replay(uri, default_journal_path(uri), capsys)[0] == 0
    (killed,) = _runs(client, "resume")
    assert killed.info.status == "KILLED" and killed.data.tags["keras_optsuite.resumes"] == "1"
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "batch.loss")] == list(range(2, 25, 2))
    tracking, _ = train(str(tmp_path), uri)  # restored at epoch 2, online: the run created from the journal
    assert tracking.run_id == killed.info.run_id
    _check_resumed_run(client, tracking, resumes=2)


# -- the gradient norm ---------------------------------------------------------------


def _regression_in(tmp_path, monkeypatch, seed):
    """64 rows of 5 inputs and 3 targets, with the embedded store in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    rng = np.random.default_rng(seed)
    return rng.normal(size=(64, 5)).astype("float32"), rng.normal(size=(64, 3)).astype("float32")


@pytest.mark.parametrize("replicas", [1, 2])
def test_gradient_norm_is_the_norm_of_the_global_gradient(tmp_path, monkeypatch, replicas):
    """Closed form: MSE of a linear model; SGD(0) keeps the weights, so every step's gradient is known."""
    import tensorflow as tf

    from conftest import mirrored_strategy

    x, y = _regression_in(tmp_path, monkeypatch, seed=3)
    strategy = (mirrored_strategy()
                if replicas == 2 else tf.distribute.get_strategy())
    with strategy.scope():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.0), "mse")
    tracking = MLflowTracking(experiment="gradients", log_every_n_steps=2, log_model=False)
    model.fit(x, y, batch_size=64, epochs=4, verbose=0, callbacks=[tracking])  # one step per epoch
    kernel, bias = [w.astype(np.float64) for w in model.get_weights()]
    residual = x @ kernel + bias - y
    gradient = np.concatenate([(2 * x.T @ residual).ravel(), 2 * residual.sum(0)]) / residual.size
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    logged = _metric(client, tracking.run_id, "gradient_norm")
    assert [step for step, _ in logged] == [2, 4]
    np.testing.assert_allclose([value for _, value in logged], np.linalg.norm(gradient), rtol=1e-5)


def test_update_norm_is_the_learning_rate_times_the_gradient_norm_for_sgd(tmp_path, monkeypatch):
    """Closed form: plain SGD moves the weights by ``learning_rate * gradient``, so on every logged step
    ``update_norm = learning_rate * gradient_norm`` and the ratio divides by the weights' norm before it."""
    x, y = _regression_in(tmp_path, monkeypatch, seed=5)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    model.compile(keras.optimizers.SGD(0.1), "mse")

    class Weights(keras.callbacks.Callback):  # the weights before every step, read independently
        def __init__(self):
            super().__init__()
            self.before = {}

        def on_train_batch_begin(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy()) + 1
            self.before[step] = np.concatenate([w.ravel() for w in self.model.get_weights()]).astype(np.float64)

    tracking = MLflowTracking(experiment="updates", log_every_n_steps=3, log_model=False)
    weights = Weights()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[tracking, weights])  # 12 steps
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    gradient_norm = _metric(client, tracking.run_id, "gradient_norm")
    update_norm = _metric(client, tracking.run_id, "update_norm")
    ratio = _metric(client, tracking.run_id, "update_to_weight_ratio")
    assert [step for step, _ in update_norm] == [3, 6, 9, 12] == [step for step, _ in gradient_norm]
    np.testing.assert_allclose([v for _, v in update_norm], [0.1 * v for _, v in gradient_norm], rtol=1e-4)
    np.testing.assert_allclose([v for _, v in ratio],
                               [v / np.linalg.norm(weights.before[step]) for step, v in update_norm], rtol=1e-6)


class _WeightsAroundEachStep(keras.callbacks.Callback):
    """Every step's weights before and after it, read on the host, and the train function that ran it.

    Independent of the tracking: NumPy copies through ``get_weights`` at every step. Put it after the
    tracking callback, which chooses the train function in its own ``on_train_batch_begin``.
    """

    def __init__(self):
        super().__init__()
        self.before, self.after, self.functions = {}, {}, {}

    def on_train_batch_begin(self, batch, logs=None):
        self._weights = np.concatenate([w.ravel() for w in self.model.get_weights()]).astype(np.float64)
        self._function = self.model.train_function

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.before[step], self.functions[step] = self._weights, self._function
        self.after[step] = np.concatenate([w.ravel() for w in self.model.get_weights()]).astype(np.float64)


def _check_update_norms(client, run_id, weights, steps):
    """``update_norm`` and ``update_to_weight_ratio`` against NumPy in float64 from the weights around each step."""
    update_norm = _metric(client, run_id, "update_norm")
    ratio = _metric(client, run_id, "update_to_weight_ratio")
    assert [step for step, _ in update_norm] == steps == [step for step, _ in ratio]
    want = [np.linalg.norm(weights.after[step] - weights.before[step]) for step in steps]
    np.testing.assert_allclose([v for _, v in update_norm], want, rtol=1e-6)
    np.testing.assert_allclose([v for _, v in ratio], [w / np.linalg.norm(weights.before[step])
                                                      for w, step in zip(want, steps)], rtol=1e-6)
    assert min(want) > 0, "the steps moved the weights"


@pytest.mark.parametrize("setup", ["one device", "two replicas", "XLA"])
def test_logged_step_telemetry_matches_numpy_and_other_steps_run_keras_own_train_function(
        tmp_path, monkeypatch, setup):
    """Adam on a decaying learning rate, on one device, under MirroredStrategy and compiled by XLA: each
    logged step's update norm and ratio equal NumPy's from the weights read before and after that step,
    its learning rate is the schedule's at that step (closed form), and only logging steps run the
    logging train function."""
    import tensorflow as tf

    from conftest import mirrored_strategy

    x, y = _regression_in(tmp_path, monkeypatch, seed=7)
    keras.utils.set_random_seed(0)
    strategy = mirrored_strategy() if setup == "two replicas" else tf.distribute.get_strategy()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.5)
    with strategy.scope():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                                  keras.layers.Dense(3)])
        model.compile(keras.optimizers.Adam(schedule), "mse", jit_compile=setup == "XLA")
    tracking = MLflowTracking(experiment="telemetry", log_every_n_steps=3, log_model=False)
    weights = _WeightsAroundEachStep()
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[tracking, weights])  # 12 steps
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    logged = [3, 6, 9, 12]
    _check_update_norms(client, tracking.run_id, weights, logged)
    learning_rate = _metric(client, tracking.run_id, "learning_rate")
    assert [step for step, _ in learning_rate] == logged
    np.testing.assert_allclose([v for _, v in learning_rate], [0.05 * 0.5 ** ((s - 1) / 4) for s in logged],
                               rtol=1e-6)
    assert [step for step, _ in _metric(client, tracking.run_id, "gradient_norm")] == logged
    keras_own = model.train_function
    assert all(weights.functions[step] is keras_own for step in weights.functions if step not in logged)
    assert all(weights.functions[step] is not keras_own for step in logged)


def test_logged_update_norms_under_mixed_float16_match_numpy(tmp_path, monkeypatch):
    """``mixed_float16`` (a LossScaleOptimizer, float32 weights): the same NumPy check."""
    x, y = _regression_in(tmp_path, monkeypatch, seed=8)
    keras.config.set_dtype_policy("mixed_float16")  # back to float32 after every test (conftest)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3, dtype="float32")])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    tracking = MLflowTracking(experiment="telemetry", log_every_n_steps=2, log_model=False)
    weights = _WeightsAroundEachStep()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tracking, weights])  # 8 steps
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    _check_update_norms(client, tracking.run_id, weights, [2, 4, 6, 8])
    gradient_norm = _metric(client, tracking.run_id, "gradient_norm")
    assert [step for step, _ in gradient_norm] == [2, 4, 6, 8]
    assert all(np.isfinite(v) and v > 0 for _, v in gradient_norm), "unscaled: not NaN, not 0"


def test_several_steps_per_call_log_the_step_that_logs_inside_the_call(tmp_path, monkeypatch):
    """``steps_per_execution=2``, logging every 3 steps: steps 3 and 9 are the first of their call, yet
    their update norms (not the call's) are logged, equal to NumPy's from the weights around each step
    of the same fit run one step per call (SGD, no shuffling: the same steps)."""
    x, y = _regression_in(tmp_path, monkeypatch, seed=9)

    def fit(steps_per_execution, callbacks):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
        model.compile(keras.optimizers.SGD(0.1), "mse", steps_per_execution=steps_per_execution)
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=callbacks)

    weights = _WeightsAroundEachStep()
    fit(1, [weights])
    tracking = MLflowTracking(experiment="telemetry", log_every_n_steps=3, log_model=False)
    fit(2, [tracking])
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    _check_update_norms(client, tracking.run_id, weights, [3, 6, 9, 12])


def test_the_best_model_is_the_best_epochs_and_the_model_keeps_its_final_weights(digits, tmp_path, monkeypatch):
    """The best epoch is not the last (``mode="max"`` on the loss: the first): best.keras and the "best"
    logged model hold that epoch's weights and optimizer state; after the fit the model holds its own."""
    monkeypatch.chdir(tmp_path)

    class EpochWeights(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append(self.model.get_weights())

    tracking = MLflowTracking(experiment="best", monitor="loss", mode="max", log_every_n_steps=EVERY)
    epochs = EpochWeights()
    model, history = _train(digits, tracking, callbacks=[tracking, epochs])
    assert np.argmax(history.history["loss"]) == 0 != EPOCHS - 1, "the setting this test needs"
    for after, final in zip(model.get_weights(), epochs.weights[-1]):
        np.testing.assert_array_equal(after, final)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    best = keras.models.load_model(client.download_artifacts(tracking.run_id, "model/best.keras", str(tmp_path)))
    for saved, first in zip(best.get_weights(), epochs.weights[0]):
        np.testing.assert_array_equal(saved, first)
    steps_per_epoch = int(np.ceil(np.floor(0.75 * len(digits[0])) / BATCH))
    assert int(best.optimizer.iterations.numpy()) == steps_per_epoch, "the optimizer state of the best epoch"
    run = client.get_run(tracking.run_id)
    outputs = {client.get_logged_model(o.model_id).name: o for o in run.outputs.model_outputs}
    assert outputs["best"].step == steps_per_epoch
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (tmp_path / "logged").mkdir()
    logged = mlflow.keras.load_model(f"models:/{outputs['best'].model_id}", dst_path=str(tmp_path / "logged"))
    for saved, first in zip(logged.get_weights(), epochs.weights[0]):
        np.testing.assert_array_equal(saved, first)


# -- resume after a restart ----------------------------------------------------------


def _check_resumed_run(client, tracking, resumes):
    from workers.resume_training import EPOCHS, EVERY, SAMPLES, BATCH

    runs = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert [run.info.run_id for run in runs] == [tracking.run_id], "the restarted job continued the same run"
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["keras_optsuite.resumes"] == str(resumes)
    steps = EPOCHS * SAMPLES // BATCH
    for key in ("batch.loss", "learning_rate", "gradient_norm", "update_norm"):
        logged = [m.step for m in client.get_metric_history(tracking.run_id, key)]
        assert sorted(logged) == list(range(EVERY, steps + 1, EVERY)), f"{key}: every step exactly once"
    epoch_ends = list(range(steps // EPOCHS, steps + 1, steps // EPOCHS))
    for key in ("loss", "val_loss", "accuracy", "epoch"):
        logged = [m.step for m in client.get_metric_history(tracking.run_id, key)]
        assert sorted(logged) == epoch_ends, f"{key}: every epoch exactly once"
    history = client.download_artifacts(tracking.run_id, "history.csv")
    rows = [line.split(",")[:2] for line in Path(history).read_text().splitlines()[1:]]
    assert rows == [[str(epoch + 1), str(step)] for epoch, step in enumerate(epoch_ends)]
    assert not Path(tracking._resume_state.directory).exists(), "a FINISHED run leaves nothing to resume"


def test_a_job_interrupted_and_started_again_continues_the_same_run(tmp_path, monkeypatch):
    from workers.resume_training import train

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    with pytest.raises(KeyboardInterrupt):
        first, _ = train(str(tmp_path), uri, stop_at=15, how="interrupt")
    client = mlflow.MlflowClient(uri)
    (killed,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert killed.info.status == "KILLED"
    # steps 12 and 14 were logged before the interrupt; the restored job (epoch 1, step 10) redoes them
    assert [m.step for m in client.get_metric_history(killed.info.run_id, "batch.loss")] == [2, 4, 6, 8, 10, 12, 14]
    first_values = {m.step: m.value for m in client.get_metric_history(killed.info.run_id, "batch.loss")}
    tracking, _ = train(str(tmp_path), uri)
    assert tracking.run_id == killed.info.run_id
    _check_resumed_run(client, tracking, resumes=1)
    again = {m.step: m.value for m in client.get_metric_history(tracking.run_id, "batch.loss")}
    assert all(again[step] == first_values[step] for step in first_values), "the first measurement stays"


@pytest.mark.slow
def test_kill_9_and_restart_continues_the_same_run_with_contiguous_steps(tmp_path, monkeypatch):
    from workers.resume_training import train

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    script = Path(__file__).parent / "workers" / "resume_training.py"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}
    killed = subprocess.run([sys.executable, str(script), str(tmp_path), "--tracking-uri", uri, "--kill-at", "15"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    client = mlflow.MlflowClient(uri)
    (crashed,) = client.search_runs([client.get_experiment_by_name("resume").experiment_id])
    assert crashed.info.status == "RUNNING", "kill -9 leaves no chance to end the run"
    tracking, _ = train(str(tmp_path), uri)  # the restarted job, in this process
    assert tracking.run_id == crashed.info.run_id
    _check_resumed_run(client, tracking, resumes=1)
