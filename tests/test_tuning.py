"""Tracked Keras Tuner searches (keras_optsuite.tuning) on a real MLflow store and server.

Each search runs once per module (fixtures) and several tests read its record.
"""

from __future__ import annotations

import csv
import gc
import io
import weakref

import keras
import mlflow
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_optsuite  # noqa: F401
from keras_optsuite.tuning import (
    FAMILIES,
    GridSearch,
    Hyperband,
    MedianPruning,
    OptimizerHyperModel,
    RandomSearch,
)

pytestmark = pytest.mark.xdist_group("tuning")

FAMILIES_SEARCHED = ["Adam", "RAdam", "Prodigy", "SGDMomentum"]
TRIALS = 5
EPOCHS = 2
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def _mlp(hp):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(10)])


def _children(client, parent):
    experiment = client.get_run(parent).info.experiment_id
    runs = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=100)
    return {run.data.tags["keras_optsuite.trial_id"]: run for run in runs}


def _epochs(client, run_id):
    """The epochs at which val_loss was logged (MLflowTracking logs ``epoch`` beside it), in step order."""
    epochs = {m.step: int(m.value) for m in client.get_metric_history(run_id, "epoch")}
    return [epochs[m.step] for m in sorted(client.get_metric_history(run_id, "val_loss"), key=lambda m: m.step)]


def _text(client, run_id, path, directory):
    return open(client.download_artifacts(run_id, path, str(directory))).read()


def _train_step_graphs() -> list:
    """The live graphs Keras traced for a train step (``one_step_on_data``)."""
    from tensorflow.python.framework import func_graph

    return [o for o in gc.get_objects()
            if isinstance(o, func_graph.FuncGraph) and o.name == "one_step_on_data"]


class _TrialObjects(keras.callbacks.Callback):
    """Keeps a weak reference to each trial's model, optimizer and traced train steps (class-level:
    Keras Tuner deep-copies the callbacks of every trial)."""

    references: list[tuple[str, weakref.ref]] = []
    trials = 0

    def on_train_end(self, logs=None):
        trial, _TrialObjects.trials = _TrialObjects.trials, _TrialObjects.trials + 1
        known = {id(reference()) for _, reference in _TrialObjects.references}
        _TrialObjects.references += [(f"trial {trial}: model", weakref.ref(self.model)),
                                     (f"trial {trial}: optimizer", weakref.ref(self.model.optimizer))]
        _TrialObjects.references += [(f"trial {trial}: traced train step", weakref.ref(graph))
                                     for graph in _train_step_graphs() if id(graph) not in known]


@pytest.fixture(scope="module")
def random_search(digits, shared_embedded_tracking_uri, tmp_path_factory):
    (x, y), validation = digits
    keras.utils.set_random_seed(0)
    hypermodel = OptimizerHyperModel(_mlp, LOSS, metrics=["accuracy"], optimizers=FAMILIES_SEARCHED)
    tuner = RandomSearch(hypermodel, objective="val_loss", max_trials=TRIALS, seed=3,
                         directory=str(tmp_path_factory.mktemp("kt")), project_name="random",
                         experiment="tuning-random", tracking_uri=shared_embedded_tracking_uri,
                         run_name="digits-search")
    _TrialObjects.references, _TrialObjects.trials = [], 0
    tuner.search(x, y, validation_data=validation, epochs=EPOCHS, batch_size=64, verbose=0,
                 callbacks=[_TrialObjects()])
    return tuner, mlflow.MlflowClient(shared_embedded_tracking_uri)


@pytest.mark.slow
def test_no_trained_model_optimizer_or_traced_train_step_outlives_its_search(random_search):
    """Memory across trials (keras-tuner#873): nothing keeps a trial's model, optimizer or traced train
    step alive, neither the tuner, its tracking callbacks and MLflow records, nor TensorFlow's gradient
    registry (which keeps every traced train step of a plain Keras loop; benchmarks/tuning_overhead.py
    --memory measures the resident memory, see the README)."""
    steps = [name for name, _ in _TrialObjects.references if name.endswith("traced train step")]
    assert len(_TrialObjects.references) == 2 * TRIALS + len(steps) and len(steps) >= TRIALS
    gc.collect()
    alive = [name for name, reference in _TrialObjects.references if reference() is not None]
    assert alive == [], f"still reachable after the search: {alive}"


@pytest.mark.slow
def test_reloading_a_search_says_so_on_stderr_and_keeps_stdout_for_results(random_search, capsys):
    tuner, _ = random_search
    reloaded = RandomSearch(tuner.hypermodel, objective="val_loss", max_trials=TRIALS, seed=3,
                            directory=tuner.directory, project_name="random", experiment="tuning-random",
                            tracking_uri=tuner.tracking_uri, run_name="digits-search")
    out, err = capsys.readouterr()

    assert len(reloaded.oracle.trials) == len(tuner.oracle.trials) == TRIALS
    assert "Reloading Tuner from" in err and "Reloading" not in out


@pytest.mark.slow
def test_random_search_is_one_parent_run_with_one_child_per_trial(random_search, tmp_path):
    tuner, client = random_search
    parent = client.get_run(tuner.parent_run_id)
    assert parent.info.status == "FINISHED" and parent.info.run_name == "digits-search"
    assert parent.data.params["max_trials"] == str(TRIALS)
    assert parent.data.params["optimizers"] == ",".join(FAMILIES_SEARCHED)
    assert {a.path for a in client.list_artifacts(tuner.parent_run_id)} >= {
        "search_space.json", "results.csv", "objective.png", "hyperparameters.png"}
    children = _children(client, tuner.parent_run_id)
    trials = tuner.oracle.trials
    assert sorted(children) == sorted(trials) and len(children) == TRIALS
    for trial_id, run in children.items():
        hp = trials[trial_id].hyperparameters
        family = hp.values["optimizer"]
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"trial_{trial_id}-{family}"
        # the trial's hyperparameters, only the chosen family's (conditional scope)
        searched = {k: v for k, v in run.data.params.items() if k.startswith("hp.")}
        expected = {"hp.optimizer"} | {f"hp.{family}/{p.name}" for p in FAMILIES[family].search_space}
        assert set(searched) == expected, (family, searched)
        for key, value in searched.items():
            assert value == str(hp.values[key[3:]])
        # the full MLflowTracking record inside, validation metrics at their epoch
        assert _epochs(client, run.info.run_id) == list(range(1, EPOCHS + 1))
        assert "optimizer.name" in run.data.params or any(k.startswith("optimizer.") for k in run.data.params)
        assert float(run.data.tags["keras_optsuite.trial_score"]) == pytest.approx(trials[trial_id].score)
    table = list(csv.DictReader(io.StringIO(_text(client, tuner.parent_run_id, "results.csv", tmp_path))))
    assert [row["trial_id"] for row in table] == sorted(trials)
    assert {row["run_id"] for row in table} == {run.info.run_id for run in children.values()}


@pytest.mark.slow
def test_each_family_defaults_run_first_and_best_score_is_tracked(random_search):
    tuner, client = random_search
    trials = tuner.oracle.trials
    first = [trials[trial_id] for trial_id in sorted(trials)[: len(FAMILIES_SEARCHED)]]
    assert [t.hyperparameters.values["optimizer"] for t in first] == FAMILIES_SEARCHED
    for trial in first:
        family = FAMILIES[trial.hyperparameters.values["optimizer"]]
        for name, default in family.defaults.items():
            assert trial.hyperparameters.values[f"{family.name}/{name}"] == pytest.approx(default)
    scores = [t.score for t in trials.values() if t.status == "COMPLETED"]
    best_history = client.get_metric_history(tuner.parent_run_id, "best_score")
    assert best_history[-1].value == pytest.approx(min(scores))
    assert best_history[-1].value <= min(t.score for t in first), "never worse than the defaults"
    values = [m.value for m in sorted(best_history, key=lambda m: m.step)]
    assert values == sorted(values, reverse=True), "best so far only improves"
    best = tuner.oracle.get_best_trials(1)[0]
    assert client.get_run(tuner.parent_run_id).data.tags["keras_optsuite.best_trial_id"] == best.trial_id


@pytest.mark.slow
def test_best_model_loads_from_its_logged_model_and_scores_what_the_parent_says(
        random_search, digits, monkeypatch, shared_embedded_tracking_uri):
    tuner, client = random_search
    _, validation = digits
    parent = client.get_run(tuner.parent_run_id)
    best_score = parent.data.metrics["best_score"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", shared_embedded_tracking_uri)
    logged = mlflow.keras.load_model(f"models:/{parent.data.tags['keras_optsuite.best_model_id']}")
    assert logged.evaluate(*validation, verbose=0)[0] == pytest.approx(best_score, rel=1e-5)
    model = tuner.get_best_models(1)[0]
    assert model.evaluate(*validation, verbose=0)[0] == pytest.approx(best_score, rel=1e-5)
    # the optimizer state comes back with the weights (Keras Tuner alone drops it with a warning)
    steps = EPOCHS * int(np.ceil(1200 / 64))
    best = tuner.oracle.get_best_trials(1)[0]
    assert int(model.optimizer.iterations) == (best.best_step + 1) * int(np.ceil(1200 / 64)) <= steps
    assert int(logged.optimizer.iterations) == int(model.optimizer.iterations)


def test_bad_budgets_and_names_raise_before_any_trial(tmp_path):
    hypermodel = OptimizerHyperModel(_mlp, LOSS, optimizers=["Adam"])
    with pytest.raises(ValueError, match="max_trials must be a positive integer, got max_trials=-1"):
        RandomSearch(hypermodel, objective="val_loss", max_trials=-1, directory=str(tmp_path))
    with pytest.raises(ValueError, match="max_epochs must be a positive integer, got max_epochs=0"):
        Hyperband(hypermodel, objective="val_loss", max_epochs=0, directory=str(tmp_path))
    with pytest.raises(ValueError, match="experiment must be a non-empty string"):
        RandomSearch(hypermodel, objective="val_loss", experiment="", directory=str(tmp_path))
    with pytest.raises(ValueError, match="min_trials must be an integer >= 0, got min_trials=-2"):
        MedianPruning(min_trials=-2)
    with pytest.raises(ValueError, match="Unknown optimizer name='Adamm'"):
        OptimizerHyperModel(_mlp, LOSS, optimizers=["Adamm"])


def test_median_rule_is_optunas():
    rule = MedianPruning(warmup_epochs=1, min_trials=2)
    assert not rule.should_prune(0, [9.0], [1.0, 2.0], "min"), "warmup epoch"
    assert not rule.should_prune(1, [9.0, 9.0], [1.0], "min", completed_trials=1), "too few completed"
    assert not rule.should_prune(1, [9.0, 2.0], [1.0, 2.0, 3.0], "min"), "as good as the median: kept"
    assert rule.should_prune(1, [9.0, 2.5], [1.0, 2.0, 3.0], "min")
    assert rule.should_prune(1, [0.1, 0.2], [0.5, 0.9], "max")
    assert rule.should_prune(1, [float("nan")] * 2, [0.5, 0.9], "max")
    assert not MedianPruning(min_trials=2, min_trials_at_epoch=3).should_prune(1, [9.0], [1.0, 2.0], "min")


# -- failures and pruning, on a real MLflow server --------------------------------------------

MODES = ["adam_a", "adam_b", "tiny_lr", "nan", "raise"]


def _mode_model(hp):
    mode = hp.Choice("mode", MODES)
    if mode == "raise":
        raise RuntimeError("boom: the model cannot be built")
    layers = [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
    if mode == "nan":
        layers.append(keras.layers.Lambda(lambda t: t * float("nan")))
    model = keras.Sequential(layers)
    rate = {"adam_a": 1e-2, "adam_b": 2e-2, "tiny_lr": 1e-6}.get(mode, 1e-2)
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=LOSS)
    return model


@pytest.fixture(scope="module")
def failing_and_pruned_search(digits, shared_mlflow_server_process, tmp_path_factory):
    server = shared_mlflow_server_process.start()
    (x, y), validation = digits
    tuner = GridSearch(_mode_model, objective="val_loss", max_trials=len(MODES),
                       max_consecutive_failed_trials=3, pruning=MedianPruning(warmup_epochs=1, min_trials=2),
                       directory=str(tmp_path_factory.mktemp("kt")), project_name="grid",
                       experiment="tuning-failures", tracking_uri=server.uri)
    tuner.search(x[:640], y[:640], validation_data=validation, epochs=3, batch_size=64, verbose=0)
    return tuner, mlflow.MlflowClient(server.uri)


def _by_mode(tuner, client):
    children = _children(client, tuner.parent_run_id)
    return {tuner.oracle.trials[t].hyperparameters.values["mode"]: (tuner.oracle.trials[t], run)
            for t, run in children.items()}


@pytest.mark.slow
def test_nan_and_raising_trials_are_failed_child_runs_and_the_search_goes_on(failing_and_pruned_search, tmp_path):
    tuner, client = failing_and_pruned_search
    assert client.get_run(tuner.parent_run_id).info.status == "FINISHED"
    runs = _by_mode(tuner, client)
    assert sorted(runs) == sorted(MODES), "every trial ran and has its child run"
    for mode in ("nan", "raise"):
        trial, run = runs[mode]
        assert trial.status == "FAILED" and run.info.status == "FAILED", mode
        assert run.data.tags["keras_optsuite.trial_status"] == "FAILED"
    assert "the loss became nan" in _text(client, runs["nan"][1].info.run_id, "traceback.txt", tmp_path)
    assert "boom: the model cannot be built" in _text(client, runs["raise"][1].info.run_id, "traceback.txt",
                                                      tmp_path)
    assert runs["nan"][1].data.params["hp.mode"] == "nan"
    for mode in ("adam_a", "adam_b"):
        assert runs[mode][0].status == "COMPLETED" and runs[mode][1].info.status == "FINISHED"


@pytest.mark.slow
def test_a_trial_worse_than_the_median_is_pruned_and_recorded(failing_and_pruned_search):
    tuner, client = failing_and_pruned_search
    runs = _by_mode(tuner, client)
    trial, run = runs["tiny_lr"]
    assert run.data.tags["keras_optsuite.pruned"] == "true"
    assert run.data.tags["keras_optsuite.pruned_at_epoch"] == "1", "right after the warm-up epoch"
    val_loss = [m.value for m in sorted(client.get_metric_history(run.info.run_id, "val_loss"),
                                        key=lambda m: m.step)]
    assert len(val_loss) == 2, "stopped after epoch 1 of 3"
    assert trial.status == "COMPLETED" and trial.score == pytest.approx(val_loss[-1], rel=1e-6), "its last value"
    assert tuner.oracle.pruned == {trial.trial_id: 1}
    for mode in ("adam_a", "adam_b"):
        assert "keras_optsuite.pruned" not in runs[mode][1].data.tags
        assert len(client.get_metric_history(runs[mode][1].info.run_id, "val_loss")) == 3


# -- Hyperband: continued trials continue their run -----------------------------------------

@pytest.mark.slow
def test_hyperband_continues_trials_in_their_run_with_bookkeeping_as_tags(
        digits, shared_embedded_tracking_uri, tmp_path):
    (x, y), validation = digits
    hypermodel = OptimizerHyperModel(_mlp, LOSS, optimizers=["Adam", "RAdam"])
    tuner = Hyperband(hypermodel, objective="val_loss", max_epochs=3, factor=3, seed=1,
                      directory=str(tmp_path), project_name="hyperband", experiment="tuning-hyperband",
                      tracking_uri=shared_embedded_tracking_uri)
    tuner.search(x, y, validation_data=validation, batch_size=64, verbose=0)
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    trials = tuner.oracle.trials
    continued = {t: trial.hyperparameters.values["tuner/trial_id"] for t, trial in trials.items()
                 if trial.hyperparameters.values.get("tuner/trial_id")}
    assert continued, "this budget has a second round"
    runs = {run.info.run_id: run for run in _children(client, tuner.parent_run_id).values()}
    assert len(runs) == len(trials) - len(continued), "a continued trial starts no new run"
    for trial_id, previous in continued.items():
        run_id = tuner.child_runs[trial_id]
        assert run_id == tuner.child_runs[previous]
        run = client.get_run(run_id)
        values = trials[trial_id].hyperparameters.values
        assert run.data.tags["keras_optsuite.trial_id"] == trial_id
        assert run.data.tags["tuner/trial_id"] == previous
        assert run.data.tags["tuner/epochs"] == str(values["tuner/epochs"])
        assert _epochs(client, run_id) == list(range(1, values["tuner/epochs"] + 1)), (
            "the epochs of both trials, once each")
    for run in runs.values():
        assert run.info.status == "FINISHED"
        assert not any("tuner/" in key for key in run.data.params), "bookkeeping values are not params"
        assert "tuner/bracket" in run.data.tags and "hp.optimizer" in run.data.params


# -- kill -9 and resume ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_search_killed_with_sigkill_resumes_without_rerunning_or_duplicating(tmp_path,
                                                                                shared_embedded_tracking_uri):
    import os
    import subprocess
    import sys
    import time

    from workers import tuning_search

    script = os.path.join(os.path.dirname(__file__), "workers", "tuning_search.py")
    environment = {**os.environ, "OPTSUITE_TEST_THREADS": "1"}
    killed = subprocess.run(
        [sys.executable, script, str(tmp_path), shared_embedded_tracking_uri, "--kill-after-epochs",
         str(2 * tuning_search.EPOCHS + 2)],
        env=environment, capture_output=True, text=True, timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-3000:]
    restarted = time.time() * 1000
    tuner = tuning_search.search(str(tmp_path), shared_embedded_tracking_uri)
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    experiment = client.get_experiment_by_name("tuning-resume").experiment_id
    parents = client.search_runs([experiment], "tags.`keras_optsuite.tuner` = 'RandomSearch'")
    assert [run.info.run_id for run in parents] == [tuner.parent_run_id], "one parent run, continued"
    assert parents[0].info.status == "FINISHED" and parents[0].data.tags["keras_optsuite.resumes"] == "1"
    children = _children(client, tuner.parent_run_id)
    all_runs = client.search_runs([experiment], "", max_results=100)
    assert len(all_runs) == 1 + tuning_search.TRIALS, "no duplicated run"
    assert sorted(children) == sorted(tuner.oracle.trials) and len(children) == tuning_search.TRIALS
    first, second, interrupted = (sorted(children)[i] for i in range(3))
    for trial_id in (first, second):  # finished before the kill: not run again
        run = children[trial_id]
        assert run.info.end_time < restarted and "keras_optsuite.resumes" not in run.data.tags
    run = children[interrupted]
    assert run.info.status == "FINISHED" and run.data.tags["keras_optsuite.resumes"] == "1"
    assert _epochs(client, run.info.run_id) == list(range(1, tuning_search.EPOCHS + 1)), "every epoch once"
    history = sorted(client.get_metric_history(run.info.run_id, "val_loss"), key=lambda m: m.step)
    # epoch 0 finished before the kill; the resumed trial went on from epoch 1
    assert history[0].timestamp < restarted <= history[1].timestamp
    assert all(trial.status == "COMPLETED" for trial in tuner.oracle.trials.values())


# -- distributed: Keras Tuner's chief + 2 workers on localhost ---------------------------------

@pytest.mark.slow
def test_chief_and_two_workers_put_every_trial_under_one_parent_run(tmp_path, mlflow_server):
    import os
    import subprocess
    import sys

    from mlflow_server import free_port
    from workers import tuning_distributed

    script = os.path.join(os.path.dirname(__file__), "workers", "tuning_distributed.py")
    port = free_port()
    processes = {}
    for role in ("chief", "tuner0", "tuner1"):
        environment = {**os.environ, "KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1",
                       "KERASTUNER_ORACLE_PORT": str(port), "TF_NUM_INTRAOP_THREADS": "1",
                       "TF_NUM_INTEROP_THREADS": "1"}
        processes[role] = subprocess.Popen(
            [sys.executable, script, str(tmp_path), mlflow_server.uri], env=environment,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = {}
    try:
        for role, process in processes.items():
            outputs[role] = process.communicate(timeout=300)[0]
            assert process.returncode == 0, f"{role}:\n{outputs[role][-4000:]}"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
    parents = {line.split("parent ")[1] for text in outputs.values() for line in text.splitlines()
               if " done: parent " in line}
    assert len(parents) == 1, outputs
    parent = parents.pop()
    client = mlflow.MlflowClient(mlflow_server.uri)
    experiment = client.get_experiment_by_name("tuning-distributed").experiment_id
    runs = client.search_runs([experiment], "", max_results=100)
    assert [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags] == [parent]
    children = _children(client, parent)
    assert sorted(children) == [f"{i}" for i in range(tuning_distributed.TRIALS)], "every trial, once"
    ran_by = {t: run.data.tags["keras_optsuite.tuner_id"] for t, run in children.items()}
    assert set(ran_by.values()) == {"tuner0", "tuner1"}, ran_by
    assert all(run.info.status == "FINISHED" for run in children.values())
    record = client.get_run(parent)
    assert record.info.status == "FINISHED", "the chief closed the parent when the workers were done"
    assert "keras_optsuite.best_model_id" in record.data.tags
    scores = [float(run.data.tags["keras_optsuite.trial_score"]) for run in children.values()]
    assert record.data.metrics["best_score"] == pytest.approx(min(scores))
    # every epoch's objective of both workers reached the chief's oracle (where pruning decides)
    import json

    state = json.loads((tmp_path / "distributed" / "oracle.json").read_text())["keras_optsuite"]
    assert {t: sorted(v) for t, v in state["epoch_values"].items()} == {
        t: [str(e) for e in range(tuning_distributed.EPOCHS)] for t in children}


@pytest.mark.slow
def test_bayesian_optimization_runs_defaults_then_its_own_proposal(digits, shared_embedded_tracking_uri, tmp_path):
    from keras_optsuite.tuning import BayesianOptimization

    (x, y), validation = digits
    hypermodel = OptimizerHyperModel(_mlp, LOSS, optimizers=["Adam", "RAdam"])
    tuner = BayesianOptimization(hypermodel, objective="val_loss", max_trials=3, num_initial_points=1, seed=0,
                                 directory=str(tmp_path), experiment="tuning-bayesian",
                                 tracking_uri=shared_embedded_tracking_uri)
    tuner.search(x[:320], y[:320], validation_data=validation, epochs=1, batch_size=64, verbose=0)
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    trials = [tuner.oracle.trials[t] for t in sorted(tuner.oracle.trials)]
    assert [t.status for t in trials] == ["COMPLETED"] * 3
    assert [t.hyperparameters.values["optimizer"] for t in trials[:2]] == ["Adam", "RAdam"]
    proposed = trials[2].hyperparameters
    family = proposed.values["optimizer"]
    active = {k for k in proposed.values if proposed.is_active(k)}
    assert active == {"optimizer", f"{family}/learning_rate", f"{family}/beta_1"}, "only its family's"
    children = _children(client, tuner.parent_run_id)
    assert len(children) == 3 and client.get_run(tuner.parent_run_id).info.status == "FINISHED"
