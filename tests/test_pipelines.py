"""The scheduled pipelines (issue 19): configs, exit codes, locks, slots, and the jobs end to end.

Configs are tiny (a few hundred synthetic rows, two epochs) so the jobs run in seconds; the jobs
run against the embedded SQLite store and a real ``mlflow server`` on 127.0.0.1. The numbers on
the leaderboard are checked against the MLflow child runs they summarize.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest

from keras_optsuite.pipelines import compare, promote, train
from keras_optsuite.pipelines._unattended import PipelineLock
from keras_optsuite.pipelines.config import ConfigError, load_config
from keras_optsuite.pipelines.data import read_data, save_data

pytestmark = pytest.mark.xdist_group("pipelines")  # one server for the module

OPTSUITE = Path(sys.executable).with_name("optsuite")
TESTS = Path(__file__).resolve().parent

TINY = """
[data]
name = "synthetic_classification"
samples = 300
features = 8
classes = 3
noise = 0.0

[model]
hidden = [16]

[training]
epochs = 2
batch_size = 32
seeds = [0, 1]
optimizer = "Adam"

[compare]
optimizers = ["Adam", "Lookahead(SGD)"]
baseline = "Adam"
trials = 2
pruning = false

[tracking]
experiment = "{experiment}"
"""


def _config(tmp_path, experiment="pipelines", name="tiny", extra=""):
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(experiment=experiment) + textwrap.dedent(extra))
    return path


def _optsuite(*args, cwd, env=None, timeout=600):
    environment = {**os.environ, "PYTHONPATH": str(TESTS), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    environment.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([str(OPTSUITE), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout)


# -- configs: every error names the file, the key path and what was expected ---------------


@pytest.mark.parametrize("text, message", [
    ("[training\nepochs = 3", "not valid TOML"),
    ("[training]\nepoch = 3", "unknown key training.epoch (did you mean 'epochs'?)"),
    ("[trainig]\nepochs = 3", "unknown section [trainig] (did you mean 'training'?)"),
    ("[training]\nepochs = \"three\"", "training.epochs must be an integer, got 'three'"),
    ("[training]\nepochs = 0", "training.epochs must be a value >= 1, got 0"),
    ("[training]\nvalidation_split = 1.5", "training.validation_split must be a number in (0.0, 1.0), got 1.5"),
    ("[data]\nname = \"digit\"", "data.name must be one of 'digits'"),
    ("[compare]\noptimizers = []", "compare.optimizers must be a non-empty list, got []"),
    ("[data]\nfunction = \"no_colon\"", "data.function must be 'module:function', got 'no_colon'"),
])
def test_a_bad_config_is_refused_naming_the_file_and_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


def test_overrides_are_parsed_as_toml_and_validated_the_same_way(tmp_path):
    path = _config(tmp_path)
    config = load_config(path, ["training.epochs=5", "compare.optimizers=['Adam', 'RAdam']", "tracking.experiment=x"])
    assert config["training"]["epochs"] == 5
    assert config["compare"]["optimizers"] == ["Adam", "RAdam"]
    assert config["tracking"]["experiment"] == "x"
    assert config["data"]["samples"] == 300 and config["model"]["dropout"] == 0.0  # file, then defaults
    for assignment, message in [("training.epochs=abc", "--set training.epochs=abc: training.epochs must be an "
                                 "integer, got 'abc'"),
                                ("training.epoch=3", "--set training.epoch=3: unknown key training.epoch"),
                                ("epochs=3", "--set epochs=3: expected section.key=value")]:
        with pytest.raises(ConfigError, match=__import__("re").escape(message)):
            load_config(path, [assignment])


def test_a_missing_module_or_function_is_named_before_any_training(tmp_path):
    from keras_optsuite.pipelines._common import context

    for reference, message in [("no_such_module:f", "cannot import module 'no_such_module'"),
                               ("pipeline_functions:nope", "module 'pipeline_functions' has no function 'nope'")]:
        config = load_config(_config(tmp_path), [f"data.function='{reference}'"])
        with pytest.raises(ConfigError, match=message):
            context(config, "train")


def test_user_data_as_arrays_or_a_tf_data_dataset_gives_the_same_split_and_a_user_model_trains_on_it(
        tmp_path, monkeypatch):
    from keras_optsuite.pipelines._common import context

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    arrays, dataset = (context(load_config(_config(tmp_path), [f"data.function='pipeline_functions:{name}'",
                                                              "model.function='pipeline_functions:linear_model'"]),
                               "train").data for name in ("blobs", "blobs_dataset"))
    assert arrays.task == dataset.task == "classification" and arrays.classes == 2
    for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(dataset, part), getattr(arrays, part), err_msg=part)
    assert sum(arrays.sizes().values()) == 200
    # handed to a search's worker processes as a file: the same rows, dtypes and description
    for data in (arrays, dataclasses.replace(arrays, task="reconstruction", classes=None)):
        save_data(data, tmp_path / "data.npz")
        read = read_data(tmp_path / "data.npz")
        assert (read.name, read.task, read.classes) == (data.name, data.task, data.classes)
        for part in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(read, part), getattr(data, part), err_msg=part)
            assert getattr(read, part).dtype == getattr(data, part).dtype
    with pytest.raises(ConfigError, match="infinite tf.data.Dataset"):
        context(load_config(_config(tmp_path), ["data.function='pipeline_functions:endless_blobs'"]), "train")
    config = load_config(_config(tmp_path), ["data.function='pipeline_functions:blobs_dataset'",
                                             "model.function='pipeline_functions:linear_model'", "training.epochs=3",
                                             "training.learning_rate=0.05"])
    trained = train.run_train(config, quiet=True, output_root=tmp_path / "outputs")
    assert trained["final"]["val_accuracy"] > 0.9, "two blobs 7 deviations apart: a line separates them"


def test_unknown_optimizers_and_a_baseline_outside_the_list_are_config_errors(tmp_path):
    for override, message in [("compare.optimizers=['Adam', 'Nope']", "compare.optimizers: Unknown optimizer"),
                              ("compare.optimizers=['Adam', 'Wrap(SGD)']", "unknown wrapper 'Wrap'"),
                              ("compare.baseline='RAdam'", "compare.baseline = 'RAdam' must be one of")]:
        with pytest.raises(ConfigError, match=__import__("re").escape(message)):
            compare.run_compare(load_config(_config(tmp_path), [override]), output_root=tmp_path / "out")
    assert not (tmp_path / "out").exists(), "nothing started"


def test_the_command_exits_2_on_a_bad_config_and_names_it(tmp_path, monkeypatch, capsys):
    from keras_optsuite import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", str(_config(tmp_path)), "--set", "training.epochs=0"]) == 2
    assert ("optsuite train: error: --set training.epochs=0: training.epochs must be a value >= 1"
            in capsys.readouterr().err)
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "outputs").exists()


# -- unattended: lock, stale lock, slots ----------------------------------------------------


# Another process holding a pipeline's lock, as PipelineLock takes it (flock, then who holds it),
# without importing the library: the holder starts in a fraction of a second.
_HOLDER = """
import fcntl, json, os, socket, sys, time
path = sys.argv[1]
os.makedirs(os.path.dirname(path), exist_ok=True)
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "2026-12-06T02:30:00+00:00",
                         "pipeline": "train tiny"}).encode())
print("held", flush=True)
if sys.argv[2:] == ["die"]:
    os._exit(9)  # dies holding it: no release
time.sleep(120)
"""


def test_a_held_lock_makes_the_second_run_exit_3_naming_the_holder(tmp_path, monkeypatch, capsys):
    from keras_optsuite import cli

    monkeypatch.chdir(tmp_path)
    lock = tmp_path / "outputs" / "train" / "tiny" / "pipeline.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert cli.main(["train", str(_config(tmp_path)), "--quiet"]) == 3
        err = capsys.readouterr().err
        assert "another run of train tiny holds" in err
        assert f"pid {holder.pid}" in err and "started 2026-12-06T02:30:00+00:00" in err
        assert not (tmp_path / "mlruns" / "mlflow.db").exists(), "nothing ran"
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_said(tmp_path, capsys):
    directory = tmp_path / "outputs" / "train" / "tiny"
    holder = subprocess.run([sys.executable, "-c", _HOLDER, str(directory / "pipeline.lock"), "die"], timeout=60)
    assert holder.returncode == 9 and json.loads((directory / "pipeline.lock").read_text())["pid"]
    with PipelineLock(directory, "train tiny"):
        assert json.loads((directory / "pipeline.lock").read_text())["pid"] == os.getpid()
    err = capsys.readouterr().err
    assert "took over the lock of train tiny left by pid" in err and "no longer running" in err
    assert (directory / "pipeline.lock").read_text() == "", "released cleanly: nothing stale next time"


@pytest.mark.slow
def test_progress_estimates_the_time_left_from_the_epochs_run_in_this_process(monkeypatch):
    """A fit resumed at epoch 6 of 10 that took 30 s for its first epoch here has ~120 s left, not ~20 s."""
    from keras_optsuite.pipelines import _unattended

    clock = iter([100.0, 130.0])
    out = io.StringIO()
    progress = _unattended.Progress("seed 0", epochs=10, out=out)
    with monkeypatch.context() as patched:
        patched.setattr(_unattended.time, "monotonic", lambda: next(clock))
        progress.on_train_begin()
        progress.on_epoch_begin(5)
        progress.on_epoch_end(5, {"loss": 0.5})
    assert "epoch 6/10 loss 0.5 · 30.0 s elapsed, ~120 s left" in out.getvalue()


def test_a_finished_slot_is_not_run_again_and_a_killed_one_resumes_its_run(tmp_path, monkeypatch):
    config = _config(tmp_path, experiment="slots", extra="")
    sets = ["--set", "training.epochs=6", "--set", "data.samples=2000"]
    # kill -9 in the middle of the slot's training, then run the slot again: it resumes
    environment = {**os.environ, "PYTHONPATH": str(TESTS), "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([str(OPTSUITE), "train", str(config), "--slot", "2026-12-06", *sets], cwd=tmp_path,
                               env=environment, stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        if "epoch 3/6" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(60)
    assert process.returncode == -signal.SIGKILL
    state = json.loads((tmp_path / "outputs/train/tiny/slots/2026-12-06.json").read_text())
    assert state["status"] == "running"
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = [s for s in sets if s != "--set"]
    resumed = train.run_train(load_config(config, overrides), slot="2026-12-06", quiet=True,
                              output_root=tmp_path / "outputs", out=io.StringIO())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("slots").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["keras_optsuite.resumes"] == "1"
    epochs = sorted(m.value for m in client.get_metric_history(run.info.run_id, "epoch"))
    assert epochs == [1, 2, 3, 4, 5, 6], "every epoch once, in the one run"
    assert resumed["run_id"] == run.info.run_id
    out = io.StringIO()
    again = train.run_train(load_config(config, overrides), slot="2026-12-06", output_root=tmp_path / "outputs",
                            out=out)
    assert again["run_id"] == run.info.run_id and "already finished" in out.getvalue()
    assert len(client.search_runs([run.info.experiment_id])) == 1, "a finished slot is not run again"


@pytest.mark.slow
def test_a_bake_off_killed_in_a_seed_run_resumes_its_slot_without_repeating_finished_work(tmp_path, monkeypatch):
    config = _config(tmp_path, experiment="compare-slots", name="crash")
    sets = ["training.epochs=4", "training.seeds=[0]"]
    environment = {**os.environ, "PYTHONPATH": str(TESTS), "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([str(OPTSUITE), "compare", str(config), "--slot", "night-1",
                                *[a for s in sets for a in ("--set", s)]], cwd=tmp_path, env=environment,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # kill -9 in the second optimizer's final run, after its epoch 2
        if "[compare Lookahead(SGD) seed 0] epoch 2/4" in line:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(60)
    assert process.returncode == -signal.SIGKILL
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    summary = compare.run_compare(load_config(config, sets), slot="night-1", quiet=True,
                                  output_root=tmp_path / "outputs", out=io.StringIO())
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("compare-slots").experiment_id
    (bake_off,) = client.search_runs([experiment], "tags.`keras_optsuite.kind` = 'compare'")
    assert bake_off.info.run_id == summary["parent_run_id"] and bake_off.info.status == "FINISHED"
    searches = {run.info.run_name: run for run in _children(client, bake_off.info.run_id)}
    assert sorted(searches) == ["Adam", "Lookahead(SGD)"], "each optimizer's search once"
    for name, search in searches.items():
        below = _children(client, search.info.run_id)
        assert sorted(r.data.tags["keras_optsuite.trial_id"] for r in below if "keras_optsuite.trial_id"
                      in r.data.tags) == ["0", "1"], f"{name}: no trial run again"
        (seed,) = [r for r in below if r.data.tags.get("keras_optsuite.kind") == "seed"]
        assert seed.info.status == "FINISHED"
        assert seed.data.tags.get("keras_optsuite.resumes") == ("1" if name == "Lookahead(SGD)" else None), \
            f"{name}: only the killed run was resumed, and in the same run"
        history = sorted((m.step, m.value) for m in client.get_metric_history(seed.info.run_id, "val_accuracy"))
        epochs = sorted(m.value for m in client.get_metric_history(seed.info.run_id, "epoch"))
        assert epochs == [1, 2, 3, 4], f"{name}: every epoch once, in the one seed run"
        # the leaderboard's steps to target come from the whole curve, the epochs before the kill included
        row = next(r for r in summary["leaderboard"] if r["optimizer"] == name)
        reached = [step for step, value in history if value >= summary["target"]]
        assert row["steps_to_target"] == (reached[0] if reached else np.inf), name
        assert row["val_accuracy_mean"] == pytest.approx(history[-1][1], rel=1e-6)


# -- the jobs end to end ----------------------------------------------------------------------


def _children(client, run_id):
    run = client.get_run(run_id)
    return client.search_runs([run.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run_id}'")


def _check_bake_off(client, summary, tmp_path):
    parent = client.get_run(summary["parent_run_id"])
    assert parent.info.status == "FINISHED"
    optimizer_runs = {run.info.run_name: run for run in _children(client, summary["parent_run_id"])}
    assert sorted(optimizer_runs) == ["Adam", "Lookahead(SGD)"]
    leaderboard = {row["optimizer"]: row for row in summary["leaderboard"]}
    for name, run in optimizer_runs.items():
        below = _children(client, run.info.run_id)
        seeds = [r for r in below if r.data.tags.get("keras_optsuite.kind") == "seed"]
        trials = [r for r in below if "keras_optsuite.trial_id" in r.data.tags]
        assert len(trials) == 2, f"{name}: the same tuning budget"
        assert sorted(r.data.tags["keras_optsuite.seed"] for r in seeds) == ["0", "1"]
        tests = [r.data.metrics["test_accuracy"] for r in seeds]
        assert leaderboard[name]["test_accuracy_mean"] == pytest.approx(np.mean(tests), rel=1e-9)
        assert leaderboard[name]["test_accuracy_std"] == pytest.approx(np.std(tests), rel=1e-9, abs=1e-12)
        finals = [r.data.metrics["val_accuracy"] for r in seeds]
        assert leaderboard[name]["val_accuracy_mean"] == pytest.approx(np.mean(finals), rel=1e-6)
        if name == "Lookahead(SGD)":
            assert all(r.data.params["optimizer.class_name"] == "Lookahead" for r in seeds + trials)
    adam_finals = [client.get_run(r.info.run_id).data.metrics["val_accuracy"]
                   for r in _children(client, optimizer_runs["Adam"].info.run_id)
                   if r.data.tags.get("keras_optsuite.kind") == "seed"]
    assert summary["target"] == pytest.approx(np.mean(adam_finals), rel=1e-6)
    ranked = sorted(leaderboard.values(), key=lambda row: -row["test_accuracy_mean"])
    assert [row["optimizer"] for row in ranked] == [row["optimizer"] for row in summary["leaderboard"]]
    assert parent.data.tags["keras_optsuite.winner"] == ranked[0]["optimizer"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "leaderboard.md", "learning_curves.png", "report.html"} <= artifacts
    report = Path(summary["report"]).read_text()
    assert "data:image/png;base64," in report and ranked[0]["optimizer"] in report


@pytest.mark.slow
def test_compare_then_promote_on_the_embedded_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = _config(tmp_path, experiment="bake-off")
    weak = load_config(path, ["training.epochs=1", "training.optimizer='SGD'", "training.learning_rate=0.0001"])
    trained = train.run_train(weak, quiet=True, output_root=tmp_path / "outputs")
    first = promote.run_promote(weak, quiet=True, output_root=tmp_path / "outputs")
    assert first["promote"] and first["reason"] == "no champion yet" and first["version"] == "1"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    assert str(client.get_model_version_by_alias("keras-optsuite-best", "champion").version) == "1"

    summary = compare.run_compare(load_config(path), quiet=True, output_root=tmp_path / "outputs")
    _check_bake_off(client, summary, tmp_path)
    assert "winner:" in capsys.readouterr().out

    demanding = load_config(path, ["promote.min_improvement=1.0"])  # accuracy cannot improve by 1
    kept = promote.run_promote(demanding, quiet=True, output_root=tmp_path / "outputs")
    assert not kept["promote"] and kept["version"] == "2"
    assert str(client.get_model_version_by_alias("keras-optsuite-best", "champion").version) == "1", "kept"
    tags = client.get_model_version("keras-optsuite-best", "2").tags
    assert tags["keras_optsuite.promote.decision"] == "kept champion"
    assert float(tags["keras_optsuite.promote.candidate_score"]) == pytest.approx(kept["candidate_score"])

    dry = promote.run_promote(load_config(path), dry_run=True, quiet=True, output_root=tmp_path / "outputs")
    assert dry["promote"] and str(client.get_model_version_by_alias("keras-optsuite-best", "champion").version) == "1"
    moved = promote.run_promote(load_config(path), quiet=True, output_root=tmp_path / "outputs")
    assert moved["promote"] and moved["candidate_score"] > moved["champion_score"]
    assert moved["version"] == "2", "the same model is registered once"
    assert str(client.get_model_version_by_alias("keras-optsuite-best", "champion").version) == "2", "moved"
    assert moved["candidate_run_id"] == summary["winner"]["run_id"]
    assert trained["run_id"] != moved["candidate_run_id"]

    from keras_optsuite.pipelines.inspect import run_runs

    capsys.readouterr()
    table = run_runs(load_config(path), run_id=summary["parent_run_id"])
    assert sorted(table["run_name"]) == ["Adam", "Lookahead(SGD)"]
    assert "Lookahead(SGD)" in capsys.readouterr().out
    _check_ui(path, tmp_path, [run.info.run_id for run in _children(client, summary["parent_run_id"])])


def _check_ui(config_path, cwd, optimizer_run_ids):
    """``optsuite ui`` serves the store and prints the comparison page of the latest bake-off."""
    import urllib.parse
    import urllib.request

    from mlflow_server import free_port

    port = free_port()
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    process = subprocess.Popen([str(OPTSUITE), "ui", str(config_path), "--port", str(port)], cwd=cwd,
                               env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("latest bake-off"):
                break
        assert lines[0].startswith(f"MLflow UI: http://127.0.0.1:{port}"), lines
        page = lines[-1].split(": ", 1)[1].strip()
        query = urllib.parse.parse_qs(page.split("?", 1)[1])
        assert sorted(json.loads(query["runs"][0])) == sorted(optimizer_run_ids)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
            assert response.status == 200
    finally:
        process.terminate()
        process.wait(30)
    assert process.returncode == 130, "SIGTERM ends it like Ctrl-C"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # the server and its workers stop with the command
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).close()
        except OSError:
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"the MLflow UI on port {port} still answers after optsuite ui was terminated")


@pytest.mark.slow
def test_tune_and_compare_against_a_real_server(tmp_path, monkeypatch, mlflow_server, capsys):
    from keras_optsuite.pipelines import tune

    monkeypatch.chdir(tmp_path)
    config_path = _config(tmp_path, experiment="bake-off-server", name="server",
                          extra=f'tracking_uri = "{mlflow_server.uri}"\n')
    summary = compare.run_compare(load_config(config_path), quiet=True, output_root=tmp_path / "outputs")
    assert "[compare" not in capsys.readouterr().err, "quiet: no progress"
    client = mlflow.MlflowClient(mlflow_server.uri)
    _check_bake_off(client, summary, tmp_path)
    assert not (tmp_path / "mlruns" / "mlflow.db").exists(), "everything went to the server"

    trained = train.run_train(load_config(config_path), quiet=True, output_root=tmp_path / "outputs")
    run = client.get_run(trained["run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["keras_optsuite.kind"] == "train"
    assert run.data.metrics["val_accuracy"] == pytest.approx(trained["final"]["val_accuracy"], rel=1e-6)

    promoted = promote.run_promote(load_config(config_path, ["promote.model_name='server-champion'"]), quiet=True,
                                   output_root=tmp_path / "outputs")
    assert promoted["promote"] and promoted["candidate_run_id"] == summary["winner"]["run_id"]
    version = client.get_model_version_by_alias("server-champion", "champion")
    assert str(version.version) == promoted["version"] and version.run_id == summary["winner"]["run_id"]

    # the search on two worker processes and a chief (the oracle), every trial under one parent run
    tuned = tune.run_tune(load_config(config_path, ["tune.trials=3", "tune.optimizers=['Adam', 'SGD']"]),
                          output_root=tmp_path / "outputs", workers=2)
    err = capsys.readouterr().err
    # which worker runs which trial is Keras Tuner's to decide (a worker slow to start may get none)
    assert "[tune server] searching on 2 worker processes" in err and ": trial done, val_" in err, err
    search = client.get_run(tuned["parent_run_id"])
    assert search.info.run_name == "tune server" and search.info.status == "FINISHED"
    trials = _children(client, search.info.run_id)
    assert sorted(r.data.tags["keras_optsuite.trial_id"] for r in trials) == ["0", "1", "2"], "each trial once"
    assert {r.data.tags["keras_optsuite.tuner_id"] for r in trials} <= {"tuner0", "tuner1"}, "run by the workers"
    scores = {r.data.tags["keras_optsuite.trial_id"]: float(r.data.tags["keras_optsuite.trial_score"])
              for r in trials}
    assert tuned["best_score"] == pytest.approx(max(scores.values())), "the oracle saw every worker's trials"


@pytest.mark.slow
def test_compare_tunes_on_worker_processes_and_the_seed_run_reproduces_the_best_trial(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    calls = tmp_path / "data_calls"
    monkeypatch.setenv("OPTSUITE_TEST_DATA_CALLS", str(calls))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    path = _config(tmp_path, experiment="bake-off-workers", name="workers")
    config = load_config(path, ["compare.optimizers=['Adam']", "training.seeds=[0]", "compare.trials=3",
                                "data.function='pipeline_functions:counted_blobs'"])
    summary = compare.run_compare(config, quiet=True, output_root=tmp_path / "outputs", workers=2)
    assert calls.read_text().split() == [str(os.getpid())], "the workers train on this process's rows"
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (search,) = _children(client, summary["parent_run_id"])
    below = _children(client, search.info.run_id)
    trials = [r for r in below if "keras_optsuite.trial_id" in r.data.tags]
    (seed,) = [r for r in below if r.data.tags.get("keras_optsuite.kind") == "seed"]
    assert len(trials) == 3 and summary["leaderboard"][0]["tuning_trials"] == 3, "the whole budget, once"
    assert {r.data.tags["keras_optsuite.tuner_id"] for r in trials} <= {"tuner0", "tuner1"}, "run by the workers"
    chosen = json.loads(summary["leaderboard"][0]["best_hyperparameters"])["Adam/learning_rate"]
    (best,) = [r for r in trials if float(r.data.params["optimizer.learning_rate"]) == pytest.approx(chosen)]
    assert float(best.data.tags["keras_optsuite.trial_score"]) == max(
        float(r.data.tags["keras_optsuite.trial_score"]) for r in trials), "the oracle chose a best trial"
    # Fairness: the trial (in a worker process) and the final run (here) start from the weights of
    # seed 0 and see the data in the same order, so the best settings reproduce the trial's curve.
    assert seed.data.params["optimizer.learning_rate"] == best.data.params["optimizer.learning_rate"]
    assert seed.data.metrics["val_loss"] == pytest.approx(best.data.metrics["val_loss"], rel=1e-3)


@pytest.mark.slow
def test_the_training_strategy_trains_every_trial_and_final_run_under_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = _config(tmp_path, experiment="bake-off-mirrored", name="mirrored")
    config = load_config(path, ["compare.optimizers=['Adam']", "training.seeds=[0]", "compare.trials=1",
                                "training.epochs=1", "training.strategy='mirrored'"])
    summary = compare.run_compare(config, quiet=True, output_root=tmp_path / "outputs")
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    (search,) = _children(client, summary["parent_run_id"])
    runs = _children(client, search.info.run_id)
    assert sorted(r.data.tags.get("keras_optsuite.kind", "trial") for r in runs) == ["seed", "trial"]
    for run in runs:  # the test session's two logical CPUs
        assert run.data.params["distribution.strategy"] == "MirroredStrategy", run.info.run_name
        assert run.data.params["distribution.replicas"] == "2", run.info.run_name
