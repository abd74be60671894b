"""The time-to-target benchmark (issue 20): its aggregation by hand, its workloads, and its quick mode end to end.

The aggregation (performance ratios, the Dolan-Moré profile, its integral up to tau = 4 and the
geometric-mean speed-up) is checked on small tables whose answers are worked out below by hand. The
quick mode runs as a user runs it, in a subprocess against a temporary embedded MLflow store; its
tables are then checked against the MLflow runs they summarize: the target against tuned Adam's
seed runs, every steps-to-target against the seed runs' logged validation curves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
INF = math.inf


def _benchmark():
    spec = importlib.util.spec_from_file_location("time_to_target", BENCHMARKS / "time_to_target.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ttt = _benchmark()

# Three workloads, three optimizers; inf = never reached the target.
STEPS = {
    "w1": {"Adam": 100.0, "A": 50.0, "B": INF},
    "w2": {"Adam": 200.0, "A": 400.0, "B": 200.0},
    "w3": {"Adam": 300.0, "A": INF, "B": 100.0},
}
# Fewest steps per workload: 50, 200, 100. Ratios to it:
RATIOS = {
    "w1": {"Adam": 2.0, "A": 1.0, "B": INF},
    "w2": {"Adam": 1.0, "A": 2.0, "B": 1.0},
    "w3": {"Adam": 3.0, "A": INF, "B": 1.0},
}


def test_ratios_are_steps_over_the_fewest_steps_on_each_workload():
    assert ttt.performance_ratios(STEPS) == RATIOS
    assert ttt.performance_ratios({"w": {"A": INF, "B": INF}}) == {"w": {"A": INF, "B": INF}}, "no best: all inf"


@pytest.mark.parametrize("optimizer, tau, expected", [
    ("Adam", 1.0, 1 / 3), ("Adam", 1.99, 1 / 3), ("Adam", 2.0, 2 / 3), ("Adam", 3.0, 1.0),
    ("A", 0.99, 0.0), ("A", 1.0, 1 / 3), ("A", 2.0, 2 / 3), ("A", 1e9, 2 / 3),  # never reaches w3
    ("B", 1.0, 2 / 3), ("B", 4.0, 2 / 3),
])
def test_the_profile_is_the_fraction_of_workloads_within_tau_of_the_best(optimizer, tau, expected):
    assert ttt.performance_profile(RATIOS, optimizer, tau) == pytest.approx(expected, abs=1e-15)


def test_the_algoperf_score_integrates_the_profile_up_to_tau_4_over_3():
    # A workload solved at ratio r <= 4 adds (4 - r) to the integral over [1, 4]; divided by 3 and averaged:
    # Adam: (4-2 + 4-1 + 4-3) / 3 / 3 = 6/9; A: (3 + 2 + 0) / 9 = 5/9; B: (0 + 3 + 3) / 9 = 6/9.
    assert ttt.profile_integral(RATIOS, "Adam") == pytest.approx(6 / 9, abs=1e-15)
    assert ttt.profile_integral(RATIOS, "A") == pytest.approx(5 / 9, abs=1e-15)
    assert ttt.profile_integral(RATIOS, "B") == pytest.approx(6 / 9, abs=1e-15)
    one = {"w": {"X": 1.0, "Y": 8.0, "Z": 2.5}}  # beyond tau = 4 counts nothing; 2.5 gives (4 - 2.5) / 3
    assert [ttt.profile_integral(one, name) for name in "XYZ"] == pytest.approx([1.0, 0.0, 0.5], abs=1e-15)
    assert ttt.profile_integral(one, "Z", tau_max=2.0) == 0.0 and ttt.profile_integral(one, "X", tau_max=2.0) == 1.0


def test_the_speedup_over_adam_is_a_geometric_mean_over_the_workloads_both_solve():
    # A: w1 100/50 = 2, w2 200/400 = 1/2 -> sqrt(2 * 1/2) = 1 on 2 workloads (w3 never reached).
    # B: w2 200/200 = 1, w3 300/100 = 3 -> sqrt(3) on 2 workloads.
    assert ttt.geometric_mean_speedup(STEPS, "A") == (pytest.approx(1.0, abs=1e-15), 2)
    assert ttt.geometric_mean_speedup(STEPS, "B") == (pytest.approx(math.sqrt(3.0), abs=1e-15), 2)
    assert ttt.geometric_mean_speedup(STEPS, "Adam") == (pytest.approx(1.0, abs=1e-15), 3)
    speedup, count = ttt.geometric_mean_speedup({"w": {"Adam": 10.0, "C": INF}}, "C")
    assert math.isnan(speedup) and count == 0


def test_aggregate_ranks_by_score_and_skips_optimizers_missing_from_a_workload():
    def result(name, steps):
        return {"workload": name, "optimizers": {k: {"steps": v, "seconds": v / 100} for k, v in steps.items()}}

    results = [result(name, steps) for name, steps in STEPS.items()]
    results[0]["optimizers"]["LBFGS"] = {"steps": 1.0, "seconds": 0.01}  # only on one workload
    aggregated = ttt.aggregate(results)
    assert aggregated["optimizers"] == ["Adam", "A", "B"]
    scores = {row["optimizer"]: row for row in aggregated["scores"]}
    assert scores["A"]["algoperf_score_steps"] == pytest.approx(5 / 9)
    assert scores["A"]["solved"] == 2 and scores["B"]["geomean_speedup_steps"] == pytest.approx(math.sqrt(3))
    assert scores["A"]["algoperf_score_seconds"] == pytest.approx(5 / 9), "seconds are steps / 100 here"
    assert aggregated["scores"][-1]["optimizer"] == "A", "lowest score last"


# -- the workloads -------------------------------------------------------------------------------


def test_every_workload_is_a_valid_bake_off_and_lbfgs_runs_only_on_the_convex_one():
    paths = ttt.workload_paths(None)
    assert [path.stem for path in paths] == ["digits_autoencoder", "digits_logistic", "digits_mlp", "mnist1d_cnn",
                                             "sequence_lstm"]
    for path in paths:
        config = ttt.workload_config(path, ttt.OPTIMIZERS, trials=3, quick=False, tracking_uri=None)
        optimizers = config["compare"]["optimizers"]
        assert ("LBFGS" in optimizers) == (path.stem == "digits_logistic"), path.stem
        assert config["compare"]["baseline"] == "Adam" and config["compare"]["trials"] == 3
        assert len(config["training"]["seeds"]) >= 3 and config["compare"]["pruning"] is False
        assert config["tracking"]["experiment"] == ttt.EXPERIMENT
    with pytest.raises(SystemExit, match="unknown workload 'digits'; workloads: digits_autoencoder"):
        ttt.workload_paths(["digits"])


def test_the_sequence_task_labels_say_first_token_and_majority():
    from keras_optsuite.pipelines.config import load_config
    from keras_optsuite.pipelines.data import load_data

    config = load_config(None, ["data.name='sequence_memory'", "data.samples=200", "data.features=7",
                                "training.test_split=0.0"])
    data = load_data(config)
    assert data.classes == 4 and data.input_shape == (7,)
    for x, y in [(data.x_train, data.y_train), (data.x_val, data.y_val)]:
        tokens = np.sign(x)  # standardized by column: a column's mean lies strictly between -1 and +1
        assert set(np.unique(tokens)) == {-1.0, 1.0}
        for row, label in zip(tokens, y):
            first = 1 if row[0] == 1 else 0
            majority = 1 if list(row).count(1) > list(row).count(-1) else 0
            assert label == 2 * first + majority


# -- the quick mode, as make test runs it --------------------------------------------------------


def _history(client, run_id, metric):
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, metric))


@pytest.mark.slow
def test_quick_mode_writes_its_tables_and_they_agree_with_the_mlflow_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    output = tmp_path / "out"
    environment = {**os.environ, "MLFLOW_TRACKING_URI": uri, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, str(BENCHMARKS / "time_to_target.py"), "--quick", "--output", str(output)],
                          cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[time-to-target 1/1 digits_logistic] bake-off of 2 optimizers" in done.stderr, "progress on stderr"
    assert "## Who beats tuned Adam where" in done.stdout
    for name in ("tables.md", "profile.png", "results.json"):
        assert (output / name).stat().st_size > 0, name
    assert (output / "profile.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((output / "results.json").read_text())
    (workload,) = results["workloads"]
    assert sorted(workload["optimizers"]) == ["Adam", "SGDNesterov"]

    client = mlflow.MlflowClient(uri)
    state = json.loads((output / "slots" / "time-to-target.json").read_text())
    parent = client.get_run(state["parent_run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["keras_optsuite.kind"] == "time_to_target"
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id)) == ["profile.png", "results.json",
                                                                                 "tables.md"]
    (bake_off,) = client.search_runs([parent.info.experiment_id],
                                     f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert bake_off.info.run_id == workload["compare_run_id"]
    assert bake_off.data.tags["keras_optsuite.kind"] == "compare"
    assert bake_off.data.metrics["target"] == pytest.approx(workload["target"])

    def seed_runs(optimizer):
        optimizer_run = workload["optimizers"][optimizer]["run_id"]
        runs = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{optimizer_run}' "
                                  "and tags.`keras_optsuite.kind` = 'seed'")
        return sorted(runs, key=lambda run: int(run.data.tags["keras_optsuite.seed"]))

    adam_finals = [_history(client, run.info.run_id, "val_accuracy")[-1][1] for run in seed_runs("Adam")]
    assert len(adam_finals) == 3
    assert workload["target"] == pytest.approx(float(np.median(adam_finals))), "target: median of tuned Adam"
    for optimizer, row in workload["optimizers"].items():
        expected = []
        for run in seed_runs(optimizer):
            curve = _history(client, run.info.run_id, "val_accuracy")
            expected.append(next((step for step, value in curve if value >= workload["target"]), INF))
        assert row["steps_per_seed"] == expected, optimizer
        assert row["steps"] == float(np.median(expected)), optimizer
    scores = {row["optimizer"]: row for row in results["scores"]}
    for optimizer, row in scores.items():
        logged = parent.data.metrics.get(f"{optimizer}.algoperf_score_steps")
        assert logged == pytest.approx(row["algoperf_score_steps"]), optimizer

    # A benchmark run interrupted after its workload finished resumes: the bake-off is not run again.
    state["status"] = "running"
    (output / "slots" / "time-to-target.json").write_text(json.dumps(state))
    ttt.main(["--quick", "--output", str(output), "--tracking-uri", uri, "--quiet"])
    runs = client.search_runs([parent.info.experiment_id], "tags.`keras_optsuite.kind` = 'compare'")
    assert [run.info.run_id for run in runs] == [bake_off.info.run_id], "no second bake-off"
    assert client.get_run(parent.info.run_id).info.status == "FINISHED"

    # --report rewrites the tables and the plot from the finished workloads, without training or logging.
    runs_before = len(client.search_runs([parent.info.experiment_id], max_results=1000))
    for name in ("tables.md", "profile.png"):
        (output / name).unlink()
    assert ttt.main(["--quick", "--output", str(output), "--report"]) == 0
    assert "digits_logistic" in (output / "tables.md").read_text() and (output / "profile.png").exists()
    assert len(client.search_runs([parent.info.experiment_id], max_results=1000)) == runs_before, "no new run"
