"""compare_runs / plot_learning_curves against real MLflow stores.

Runs are written directly with ``MlflowClient`` (params, metric histories with
known values, start and end times) into the embedded SQLite store in a
temporary folder, and into a real ``mlflow server`` on 127.0.0.1. Expected
table values are computed here from the logged values, not by the module.
"""

from __future__ import annotations

import math
import struct

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import Metric, Param

from keras_optsuite.callbacks.compare import (
    PLOT_DPI,
    SUBPLOT_HEIGHT_INCHES,
    SUBPLOT_WIDTH_INCHES,
    _learning_curve_figure,
    compare_runs,
    lower_is_better,
    plot_learning_curves,
)

T0_MS = 1_700_000_000_000  # run start times: T0 + 1 s per run

# name -> params and metric histories as (step, value) lists. Steps are logged
# in a shuffled order, so "final" must come from the largest step, not the last
# write. NaN in val_loss must not count as "best"; sgd has no accuracy.
RUN_SPECS = {
    "adam": {
        "params": {"optimizer": "adam", "learning_rate": "0.001"},
        "metrics": {
            "loss": [(0, 2.3), (1, 1.4), (2, 1.1), (3, 1.25)],
            "val_loss": [(0, 2.4), (1, 1.7), (2, 1.5), (3, 1.6)],
            "accuracy": [(0, 0.10), (1, 0.62), (2, 0.71), (3, 0.69)],
        },
    },
    "sgd": {
        "params": {"optimizer": "sgd", "learning_rate": "0.1", "momentum": "0.9"},
        "metrics": {
            "loss": [(0, 2.3), (1, 2.0), (2, 1.8), (3, 1.7), (4, 1.65)],
            "val_loss": [(0, 2.35), (1, float("nan")), (2, 1.9), (3, 1.95)],
        },
    },
    "lion": {
        "params": {"optimizer": "lion", "learning_rate": "0.0003"},
        "metrics": {
            "loss": [(0, 2.3), (2, 0.9), (4, 1.0)],
            "val_loss": [(0, 2.2), (2, 1.2), (4, 1.3)],
            "accuracy": [(0, 0.12), (2, 0.80), (4, 0.83)],
            "val_mean_squared_error": [(0, 0.5), (2, 0.2), (4, 0.3)],
        },
    },
}
DURATIONS_S = {"adam": 12.5, "sgd": 30.0, "lion": 7.25}


def _log_run(client, experiment_id, name, spec, start_ms, duration_s, tags=None, seed=0):
    run = client.create_run(experiment_id, start_time=start_ms, run_name=name, tags=tags or {})
    points = [
        (key, step, value) for key, history in spec["metrics"].items() for step, value in history
    ]
    order = np.random.default_rng(seed).permutation(len(points))
    metrics = [
        Metric(points[i][0], points[i][2], start_ms + write, points[i][1])
        for write, i in enumerate(order)
    ]
    client.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, v) for k, v in spec["params"].items()],
    )
    client.set_terminated(run.info.run_id, end_time=start_ms + int(duration_s * 1000))
    return run.info.run_id


def _log_specs(client, experiment_id):
    run_ids = {}
    for index, (name, spec) in enumerate(RUN_SPECS.items()):
        run_ids[name] = _log_run(
            client, experiment_id, name, spec, T0_MS + 1000 * index, DURATIONS_S[name],
            seed=index,
        )
    return run_ids


def _expected_final(history):
    return max(history)[1]  # the value at the largest step


def _expected_best(key, history):
    values = np.array([v for _, v in history], dtype=float)
    return float(np.nanmin(values) if ("loss" in key or "error" in key) else np.nanmax(values))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One embedded SQLite store for the module (creating its schema takes ~1.5 s).

    - experiment "optimizers": the three RUN_SPECS runs;
    - experiment "sweep": a parent, three children (two share a name), a
      grandchild and an unrelated run;
    - experiment "many": 120 runs, one param and one metric each;
    - experiment "repeated": one run that logged step 2 twice.
    """
    root = tmp_path_factory.mktemp("mlflow_store")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    ids = {}

    experiment_id = client.create_experiment("optimizers", artifact_location=str(root / "a1"))
    ids["optimizers"] = _log_specs(client, experiment_id)

    sweep_id = client.create_experiment("sweep", artifact_location=str(root / "a2"))
    parent = client.create_run(sweep_id, run_name="sweep-parent", start_time=T0_MS)
    client.log_batch(parent.info.run_id, metrics=[Metric("loss", 9.0, T0_MS, 0)])
    parent_tag = {"mlflow.parentRunId": parent.info.run_id}
    children = {}
    for index, name in enumerate(["trial-0", "trial-1", "trial-1"]):
        spec = {
            "params": {"trial": str(index)},
            "metrics": {"loss": [(step, 1.0 / (index + step + 1)) for step in range(5)]},
        }
        children[f"child{index}"] = _log_run(
            client, sweep_id, name, spec, T0_MS + 1000 * (index + 1), 1.0, tags=parent_tag
        )
    grandchild_spec = {"params": {"trial": "g"}, "metrics": {"loss": [(0, 5.0)]}}
    _log_run(client, sweep_id, "grandchild", grandchild_spec, T0_MS + 9000, 1.0,
             tags={"mlflow.parentRunId": children["child0"]})
    _log_run(client, sweep_id, "unrelated", grandchild_spec, T0_MS + 9500, 1.0)
    ids["sweep"] = {"parent": parent.info.run_id, **children}

    many_id = client.create_experiment("many", artifact_location=str(root / "a3"))
    ids["many"] = {}
    for index in range(120):
        run = client.create_run(many_id, run_name=f"run-{index:03d}", start_time=T0_MS + index)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("loss", float(index), T0_MS, 0)],
            params=[Param("index", str(index))],
        )
        ids["many"][run.info.run_id] = index

    repeated_id = client.create_experiment("repeated", artifact_location=str(root / "a4"))
    run = client.create_run(repeated_id, run_name="resumed", start_time=T0_MS)
    # Step 2 written twice (a resumed job): the later timestamp (0.7) replaces
    # 0.1, although it reaches the store first.
    client.log_batch(run.info.run_id, metrics=[
        Metric("loss", 0.7, T0_MS + 4, 2),
        Metric("loss", 0.8, T0_MS + 3, 1),
        Metric("loss", 1.0, T0_MS + 1, 0),
    ])
    client.log_batch(run.info.run_id, metrics=[Metric("loss", 0.1, T0_MS + 2, 2)])
    ids["repeated"] = run.info.run_id
    return {"uri": uri, "client": client, "ids": ids}


# --- the table ----------------------------------------------------------------------


def _assert_table_matches_specs(table, run_ids):
    assert len(table) == len(RUN_SPECS)
    assert list(table["run_name"]) == list(RUN_SPECS)  # default order: start time
    for _, row in table.iterrows():
        name = row["run_name"]
        spec = RUN_SPECS[name]
        assert row["run_id"] == run_ids[name]
        assert row["status"] == "FINISHED"
        assert row["duration_s"] == pytest.approx(DURATIONS_S[name])
        assert row["start_time"].value // 1_000_000 == T0_MS + 1000 * list(RUN_SPECS).index(name)
        for key in ("loss", "val_loss", "accuracy", "val_mean_squared_error"):
            history = spec["metrics"].get(key)
            if history is None:
                assert math.isnan(row[f"{key}.final"]) and math.isnan(row[f"{key}.best"])
            else:
                assert row[f"{key}.final"] == pytest.approx(_expected_final(history))
                assert row[f"{key}.best"] == pytest.approx(_expected_best(key, history))
        steps = {step for history in spec["metrics"].values() for step, _ in history}
        assert row["num_steps"] == len(steps)
        for key in ("optimizer", "learning_rate", "momentum"):
            if key in spec["params"]:
                assert row[f"param.{key}"] == spec["params"][key]
            else:
                assert pd.isna(row[f"param.{key}"])


def test_experiment_table_has_one_row_per_run_with_final_and_best(store):
    table = compare_runs("optimizers", tracking_uri=store["uri"])
    assert list(table.columns) == [
        "run_id", "run_name", "status", "start_time", "duration_s",
        "param.learning_rate", "param.momentum", "param.optimizer",
        "accuracy.final", "accuracy.best", "loss.final", "loss.best",
        "val_loss.final", "val_loss.best",
        "val_mean_squared_error.final", "val_mean_squared_error.best",
        "num_steps",
    ]
    _assert_table_matches_specs(table, store["ids"]["optimizers"])
    # The values that make the check meaningful: final != best, NaN skipped.
    adam = table.set_index("run_name").loc["adam"]
    assert (adam["loss.final"], adam["loss.best"]) == (1.25, 1.1)
    assert (adam["accuracy.final"], adam["accuracy.best"]) == (0.69, 0.71)
    assert table.set_index("run_name").loc["sgd", "val_loss.best"] == 1.9


def test_requested_metrics_and_params_only(store):
    table = compare_runs(
        "optimizers", tracking_uri=store["uri"], metrics=["val_loss"], params=["optimizer"]
    )
    assert list(table.columns) == [
        "run_id", "run_name", "status", "start_time", "duration_s",
        "param.optimizer", "val_loss.final", "val_loss.best", "num_steps",
    ]
    # num_steps counts the steps of the requested metrics only.
    assert list(table["num_steps"]) == [4, 4, 3]
    empty = compare_runs("optimizers", tracking_uri=store["uri"], metrics=[], params=[])
    assert list(empty.columns) == [
        "run_id", "run_name", "status", "start_time", "duration_s", "num_steps"
    ]
    assert list(empty["num_steps"]) == [0, 0, 0]


def test_order_by_a_column_in_either_direction(store):
    by_best = compare_runs("optimizers", tracking_uri=store["uri"], order_by="val_loss.best")
    assert list(by_best["run_name"]) == ["lion", "adam", "sgd"]  # 1.2, 1.5, 1.9
    descending = compare_runs(
        "optimizers", tracking_uri=store["uri"], order_by="accuracy.best", ascending=False
    )
    assert list(descending["run_name"]) == ["lion", "adam", "sgd"]  # sgd: NaN sorts last
    assert list(descending.index) == [0, 1, 2]


def test_repeated_step_keeps_the_last_write(store):
    table = compare_runs("repeated", tracking_uri=store["uri"])
    row = table.iloc[0]
    assert row["loss.final"] == 0.7  # step 2, latest timestamp
    assert row["loss.best"] == 0.7  # the overwritten 0.1 is not in the history
    assert row["num_steps"] == 3
    assert math.isnan(row["duration_s"])  # never terminated
    assert row["status"] == "RUNNING"


def test_children_of_a_parent_run_only(store):
    ids = store["ids"]["sweep"]
    table = compare_runs(parent_run_id=ids["parent"], tracking_uri=store["uri"])
    assert sorted(table["run_id"]) == sorted([ids["child0"], ids["child1"], ids["child2"]])
    assert list(table["param.trial"]) == ["0", "1", "2"]
    for index, row in table.iterrows():
        history = [(step, 1.0 / (index + step + 1)) for step in range(5)]
        assert row["loss.final"] == pytest.approx(_expected_final(history))
        assert row["loss.best"] == pytest.approx(_expected_best("loss", history))
    # The whole experiment has the parent, grandchild and unrelated run too.
    assert len(compare_runs("sweep", tracking_uri=store["uri"])) == 6


def test_pagination_reads_every_page(store):
    client = store["client"]
    experiment_id = client.get_experiment_by_name("many").experiment_id
    first_page = client.search_runs([experiment_id], max_results=7)
    assert len(first_page) == 7 and first_page.token  # the page size really limits

    table = compare_runs("many", tracking_uri=store["uri"], _page_size=7)
    assert len(table) == 120
    assert set(table["run_id"]) == set(store["ids"]["many"])
    for _, row in table.iterrows():
        index = store["ids"]["many"][row["run_id"]]
        assert row["param.index"] == str(index)
        assert row["loss.final"] == row["loss.best"] == float(index)
    assert list(table["run_name"]) == [f"run-{i:03d}" for i in range(120)]

    figure = _learning_curve_figure(
        "many", tracking_uri=store["uri"], metrics=["loss"], _page_size=7
    )
    assert len(figure.axes[0].get_lines()) == 120


def test_lower_is_better_by_name():
    assert lower_is_better("loss") and lower_is_better("val_loss")
    assert lower_is_better("mean_squared_error") and lower_is_better("Top1_Error")
    assert not lower_is_better("accuracy") and not lower_is_better("val_auc")
    assert lower_is_better("val_mae") and not lower_is_better("f1_score")  # Keras's "auto" default: min


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({}, "experiment and parent_run_id"),
        ({"experiment": "optimizers", "parent_run_id": "abc"}, "experiment and parent_run_id"),
        ({"experiment": "no-such-experiment"}, "no-such-experiment"),
        ({"experiment": ""}, "experiment"),
        ({"experiment": 3}, "experiment"),
        ({"parent_run_id": "0123456789abcdef0123456789abcdef"}, "parent_run_id"),
        ({"experiment": "optimizers", "metrics": "loss"}, "metrics"),
        ({"experiment": "optimizers", "metrics": ["loss", "loss"]}, "metrics"),
        ({"experiment": "optimizers", "params": [1]}, "params"),
        ({"experiment": "optimizers", "order_by": "no.such.column"}, "order_by"),
        ({"experiment": "optimizers", "order_by": 3}, "order_by"),
        ({"experiment": "optimizers", "ascending": "yes"}, "ascending"),
    ],
)
def test_compare_runs_rejects_invalid_arguments(store, kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        compare_runs(tracking_uri=store["uri"], **kwargs)


def test_invalid_tracking_uri_is_named():
    with pytest.raises(ValueError, match="tracking_uri"):
        compare_runs("optimizers", tracking_uri=5)


def test_tracking_uri_defaults_to_the_environment(store, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # whatever happens, nothing lands in the repository
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store["uri"])
    table = compare_runs("optimizers")
    _assert_table_matches_specs(table, store["ids"]["optimizers"])


def test_without_environment_the_embedded_store_in_mlruns_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    experiment_id = client.create_experiment("local", artifact_location=str(tmp_path / "a"))
    run_ids = _log_specs(client, experiment_id)
    _assert_table_matches_specs(compare_runs("local"), run_ids)


# --- the learning curves ------------------------------------------------------------


def _lines_by_label(axis):
    return {line.get_label(): line for line in axis.get_lines()}


def test_figure_lines_are_the_logged_histories(store):
    figure = _learning_curve_figure(
        "optimizers", tracking_uri=store["uri"], metrics=("loss", "accuracy", "val_loss")
    )
    axes = [axis for axis in figure.axes if axis.get_visible()]
    assert [axis.get_title() for axis in axes] == ["loss", "accuracy", "val_loss"]
    colours = {}
    for axis in axes:
        key = axis.get_title()
        lines = _lines_by_label(axis)
        expected_runs = [name for name, spec in RUN_SPECS.items() if key in spec["metrics"]]
        assert sorted(lines) == sorted(expected_runs)  # sgd skipped for accuracy
        for name in expected_runs:
            history = sorted(RUN_SPECS[name]["metrics"][key])
            np.testing.assert_array_equal(lines[name].get_xdata(), [s for s, _ in history])
            np.testing.assert_array_equal(lines[name].get_ydata(), [v for _, v in history])
            colours.setdefault(name, set()).add(lines[name].get_color())
    assert all(len(c) == 1 for c in colours.values())  # one colour per run everywhere
    assert len({next(iter(c)) for c in colours.values()}) == 3
    assert figure.get_suptitle() == "experiment optimizers"


def test_child_curves_are_labelled_by_run_name(store):
    ids = store["ids"]["sweep"]
    figure = _learning_curve_figure(
        parent_run_id=ids["parent"], tracking_uri=store["uri"], metrics=["loss"], title="sweep"
    )
    lines = _lines_by_label(figure.axes[0])
    assert sorted(lines) == sorted([
        "trial-0", f"trial-1 ({ids['child1'][:8]})", f"trial-1 ({ids['child2'][:8]})"
    ])
    np.testing.assert_allclose(lines["trial-0"].get_ydata(), [1 / (s + 1) for s in range(5)])
    assert figure.get_suptitle() == "sweep"


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize(
    "metrics, grid",
    [(("loss", "val_loss"), (2, 1)), (("loss", "val_loss", "accuracy", "nothing"), (3, 2))],
)
def test_png_is_written_with_the_expected_size(store, tmp_path, metrics, grid):
    target = tmp_path / "plots" / "curves.png"
    written = plot_learning_curves(
        "optimizers", tracking_uri=store["uri"], metrics=metrics, path=str(target)
    )
    assert written == target and target.is_file()
    columns, rows = grid
    assert _png_size(target) == (
        round(columns * SUBPLOT_WIDTH_INCHES * PLOT_DPI),
        round(rows * SUBPLOT_HEIGHT_INCHES * PLOT_DPI),
    )


def test_plot_rejects_invalid_arguments(store, tmp_path):
    target = tmp_path / "c.png"
    with pytest.raises(ValueError, match="metrics"):
        plot_learning_curves("optimizers", tracking_uri=store["uri"],
                             metrics=["nothing", "nada"], path=target)
    assert not target.exists()
    with pytest.raises(ValueError, match="metrics"):
        plot_learning_curves("optimizers", tracking_uri=store["uri"], metrics=[], path=target)
    with pytest.raises(ValueError, match="metrics"):
        plot_learning_curves("optimizers", tracking_uri=store["uri"], metrics="loss", path=target)
    with pytest.raises(ValueError, match="path"):
        plot_learning_curves("optimizers", tracking_uri=store["uri"], path=tmp_path / "c.jpg")
    with pytest.raises(ValueError, match="path"):
        plot_learning_curves("optimizers", tracking_uri=store["uri"], path=None)
    with pytest.raises(ValueError, match="title"):
        plot_learning_curves("optimizers", tracking_uri=store["uri"], path=target, title=1)
    with pytest.raises(ValueError, match="experiment and parent_run_id"):
        plot_learning_curves(tracking_uri=store["uri"], path=target)
    with pytest.raises(ValueError, match="parent_run_id"):
        plot_learning_curves(parent_run_id="feed" * 8, tracking_uri=store["uri"], path=target)


# --- a real tracking server ---------------------------------------------------------


@pytest.mark.slow
def test_against_a_real_tracking_server(tmp_path, mlflow_server):
    url = mlflow_server.uri
    client = mlflow.MlflowClient(url)
    experiment_id = client.create_experiment("compare-optimizers")
    run_ids = _log_specs(client, experiment_id)
    parent = client.create_run(experiment_id, run_name="parent", start_time=T0_MS - 1)
    child_ids = {
        _log_run(client, experiment_id, f"child-{i}", RUN_SPECS["lion"], T0_MS + 5000 + i,
                 1.0, tags={"mlflow.parentRunId": parent.info.run_id})
        for i in range(5)
    }
    experiment_runs = set(run_ids.values()) | child_ids | {parent.info.run_id}

    table = compare_runs("compare-optimizers", tracking_uri=url, _page_size=2)
    assert set(table["run_id"]) == experiment_runs and len(table) == 9
    specs_only = table[table["run_id"].isin(run_ids.values())].reset_index(drop=True)
    _assert_table_matches_specs(specs_only, run_ids)

    children = compare_runs(parent_run_id=parent.info.run_id, tracking_uri=url, _page_size=2)
    assert set(children["run_id"]) == child_ids
    assert list(children["loss.best"]) == [0.9] * 5

    figure = _learning_curve_figure("compare-optimizers", tracking_uri=url, metrics=["val_loss"])
    lines = _lines_by_label(figure.axes[0])
    np.testing.assert_array_equal(
        lines["sgd"].get_ydata(), [v for _, v in RUN_SPECS["sgd"]["metrics"]["val_loss"]]
    )
    png = plot_learning_curves(
        parent_run_id=parent.info.run_id, tracking_uri=url, metrics=["loss"],
        path=tmp_path / "children.png",
    )
    assert _png_size(png) == (
        round(SUBPLOT_WIDTH_INCHES * PLOT_DPI), round(SUBPLOT_HEIGHT_INCHES * PLOT_DPI)
    )
    with pytest.raises(ValueError, match="parent_run_id"):
        compare_runs(parent_run_id="feed" * 8, tracking_uri=url)
    with pytest.raises(ValueError, match="no-such-experiment"):
        compare_runs("no-such-experiment", tracking_uri=url)
