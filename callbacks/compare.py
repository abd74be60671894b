"""Compare MLflow runs: one table row per run, overlaid learning curves as a PNG.

The runs are either all active runs of an experiment, or the child runs of a
parent run (e.g. the trials of a tuning session, or the optimizers of a
comparison pipeline). Both functions read from any tracking store MLflow
reaches: a ``http://`` tracking server or the embedded SQLite store.

Which value is "best" depends on the metric's name: see :func:`lower_is_better`.

Example::

    from keras_optsuite.callbacks.compare import compare_runs, plot_learning_curves

    table = compare_runs("mnist-optimizers", metrics=["val_loss", "val_accuracy"],
                         order_by="val_loss.best")
    print(table[["run_name", "param.optimizer.name", "val_loss.best"]])
    plot_learning_curves("mnist-optimizers", metrics=("loss", "val_loss"),
                         path="curves.png")
"""

from __future__ import annotations

import collections
import math
import os
import pathlib
from typing import TYPE_CHECKING, Any, Sequence

from keras_optsuite._validation import check_bool, check_positive_int
from keras_optsuite.callbacks._store import resolve_tracking_uri

if TYPE_CHECKING:
    import mlflow
    import pandas
    from matplotlib.figure import Figure

__all__ = ["compare_runs", "lower_is_better", "plot_learning_curves"]

# MLflow's own default page size for search_runs; tests pass a smaller one.
_SEARCH_PAGE_SIZE = 1000

# Size of one learning-curve subplot; the PNG is (ncols * width, nrows * height)
# pixels, never cropped (no bbox_inches="tight"), so its size is predictable.
SUBPLOT_WIDTH_INCHES = 6.4
SUBPLOT_HEIGHT_INCHES = 4.0
PLOT_DPI = 100
_MAX_SUBPLOT_COLUMNS = 3
# Above this many runs a legend hides the curves; the lines keep their labels.
_MAX_LEGEND_ENTRIES = 20

_BASE_COLUMNS = ["run_id", "run_name", "status", "start_time", "duration_s"]


# Metric names whose best value is the maximum; every other metric is best
# at its minimum (Keras's ModelCheckpoint "auto" convention, extended).
_HIGHER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "iou")


def lower_is_better(metric: str) -> bool:
    """Whether the best value of ``metric`` is its minimum.

    True when the name contains ``"loss"`` or ``"error"`` (case-insensitive:
    ``loss``, ``val_loss``, ``mean_squared_error``, ``top1_error``); False when
    it names a score (``acc``, ``auc``, ``precision``, ``recall``, ``f1``,
    ``iou``: accuracy, AUC, F1, ...); True for every other metric (``mae``,
    ``mse``, ``perplexity``, ...), as Keras's ``ModelCheckpoint`` does in
    ``"auto"`` mode. ``MLflowTracking`` picks its best model by the same rule.

    Example::

        lower_is_better("val_loss")      # True
        lower_is_better("val_accuracy")  # False
    """
    name = metric.lower()
    if "loss" in name or "error" in name:
        return True
    return not any(word in name for word in _HIGHER_IS_BETTER)


def compare_runs(
    experiment: str | None = None,
    *,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    metrics: Sequence[str] | None = None,
    params: Sequence[str] | None = None,
    order_by: str | None = None,
    ascending: bool = True,
    _page_size: int = _SEARCH_PAGE_SIZE,
) -> pandas.DataFrame:
    """Gather the runs of an experiment, or a parent run's children, into a table.

    Exactly one of ``experiment`` and ``parent_run_id`` selects the runs:
    every active (not deleted) run of the experiment, or every active run of
    the parent's experiment whose ``mlflow.parentRunId`` tag is the parent
    (the parent itself excluded). All pages of the search are read.

    Columns, one row per run:

    - ``run_id``, ``run_name``, ``status`` (``FINISHED``, ``RUNNING``, ...),
      ``start_time`` (UTC ``pandas.Timestamp``), ``duration_s`` (NaN while
      the run has no end time);
    - ``param.<key>`` for each requested param (all params of all runs when
      ``params`` is None), as the strings MLflow stores; missing
      (``pandas.isna``) where a run lacks it;
    - ``<metric>.final`` (value at the largest step; on a repeated step the
      one with the latest timestamp) and ``<metric>.best`` (minimum of that
      one-value-per-step history when :func:`lower_is_better` says so,
      maximum otherwise; NaN values ignored) for each requested metric (all
      metrics of all runs when ``metrics`` is None); NaN where a run lacks
      the metric;
    - ``num_steps``: number of distinct steps at which any of those metrics
      was logged.

    Args:
        experiment: Experiment name (an experiment id is accepted too when no
            experiment has that name).
        parent_run_id: Id of the parent run whose children are compared.
        tracking_uri: Tracking store; None means ``MLFLOW_TRACKING_URI`` or,
            without it, the embedded store under ``mlruns/``.
        metrics: Metric keys to summarize; None for all.
        params: Param keys to include; None for all.
        order_by: A column of the table to sort by (e.g. ``"val_loss.best"``);
            None sorts by ``start_time``. Missing values sort last.
        ascending: Sort direction for ``order_by``.

    Returns:
        A ``pandas.DataFrame`` with a fresh ``RangeIndex``.

    Raises:
        ValueError: both or neither of ``experiment``/``parent_run_id``; an
            unknown experiment or run; an argument of the wrong type;
            ``order_by`` not a column of the table.

    Example::

        table = compare_runs(parent_run_id=sweep_run_id, metrics=["val_loss"],
                             params=["optimizer.name", "optimizer.learning_rate"],
                             order_by="val_loss.best")
        best_run_id = table.loc[0, "run_id"]
    """
    import pandas

    metric_keys: Sequence[str] | None = _check_keys("metrics", metrics, allow_none=True, allow_empty=True)
    param_keys: Sequence[str] | None = _check_keys("params", params, allow_none=True, allow_empty=True)
    if order_by is not None and (not isinstance(order_by, str) or not order_by):
        raise ValueError(f"order_by must be a column name or None, got order_by={order_by!r}")
    check_bool("ascending", ascending)
    check_positive_int("_page_size", _page_size)

    client = _client(tracking_uri)
    runs = _select_runs(client, experiment, parent_run_id, _page_size)

    if metric_keys is None:
        metric_keys = sorted({key for run in runs for key in run.data.metrics})
    if param_keys is None:
        param_keys = sorted({key for run in runs for key in run.data.params})

    rows = []
    for run in runs:
        row: dict[str, Any] = {
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "status": run.info.status,
            "start_time": pandas.to_datetime(run.info.start_time, unit="ms", utc=True),
            "duration_s": (
                (run.info.end_time - run.info.start_time) / 1000.0
                if run.info.end_time is not None and run.info.start_time is not None
                else math.nan
            ),
        }
        for key in param_keys:
            row[f"param.{key}"] = run.data.params.get(key)
        steps: set[int] = set()
        for key in metric_keys:
            history = _history(client, run, key)
            row[f"{key}.final"] = _final_value(history)
            row[f"{key}.best"] = _best_value(key, history)
            steps.update(step for step, _ in history)
        row["num_steps"] = len(steps)
        rows.append(row)

    columns = (
        _BASE_COLUMNS
        + [f"param.{key}" for key in param_keys]
        + [f"{key}.{kind}" for key in metric_keys for kind in ("final", "best")]
        + ["num_steps"]
    )
    table = pandas.DataFrame(rows, columns=columns)
    if order_by is None:
        table = table.sort_values(["start_time", "run_id"], kind="stable")
    else:
        if order_by not in table.columns:
            raise ValueError(
                f"order_by must be a column of the table ({', '.join(columns)}), "
                f"got order_by={order_by!r}"
            )
        table = table.sort_values(
            order_by, ascending=ascending, kind="stable", na_position="last"
        )
    return table.reset_index(drop=True)


def plot_learning_curves(
    experiment: str | None = None,
    *,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    metrics: Sequence[str] = ("loss", "val_loss"),
    path: str | os.PathLike,
    title: str | None = None,
) -> pathlib.Path:
    """Draw the learning curves of several runs, overlaid, into a PNG file.

    One subplot per metric (up to three per row), one line per run: the full
    metric history against the step (on a repeated step, the value with the
    latest timestamp). A run keeps the same colour in every subplot and is
    labelled by its run name (plus a short run id when two runs share a name);
    the legend is drawn when at most 20 runs are plotted. A run lacking a metric is
    skipped in that subplot; a metric no run has gets an empty, annotated
    subplot. The PNG is ``ncols * 640`` by ``nrows * 400`` pixels.

    Runs are selected as in :func:`compare_runs` (exactly one of
    ``experiment`` and ``parent_run_id``). Drawing uses matplotlib's Agg
    canvas directly: no display, no change to pyplot's global state.

    Args:
        experiment: Experiment name (or id).
        parent_run_id: Id of the parent run whose children are plotted.
        tracking_uri: Tracking store; None as in :func:`compare_runs`.
        metrics: Metric keys, one subplot each.
        path: Where to write the PNG (suffix ``.png``; parent folders are
            created).
        title: Figure title; None for "experiment <name>" or
            "children of run <id>".

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        ValueError: invalid selection or arguments as in :func:`compare_runs`;
            no selected run has any of ``metrics``.

    Example::

        png = plot_learning_curves(parent_run_id=sweep_run_id,
                                   metrics=("val_loss", "val_accuracy"),
                                   path="sweep_curves.png")
    """
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a str or os.PathLike, got path={path!r}")
    png_path = pathlib.Path(path)
    if png_path.suffix.lower() != ".png":
        raise ValueError(f"path must end in .png, got path={str(path)!r}")
    figure = _learning_curve_figure(
        experiment,
        parent_run_id=parent_run_id,
        tracking_uri=tracking_uri,
        metrics=metrics,
        title=title,
    )
    png_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(png_path, format="png", dpi=PLOT_DPI)
    return png_path


def _learning_curve_figure(
    experiment: str | None = None,
    *,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    metrics: Sequence[str] = ("loss", "val_loss"),
    title: str | None = None,
    _page_size: int = _SEARCH_PAGE_SIZE,
) -> Figure:
    """The figure :func:`plot_learning_curves` saves (tests read its lines)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric_keys = _check_keys("metrics", metrics, allow_none=False, allow_empty=False)
    assert metric_keys is not None  # allow_none=False
    if title is not None and not isinstance(title, str):
        raise ValueError(f"title must be a str or None, got title={title!r}")

    client = _client(tracking_uri)
    runs = _select_runs(client, experiment, parent_run_id, _page_size)
    runs = sorted(runs, key=lambda run: (run.info.start_time or 0, run.info.run_id))
    histories = {
        (run.info.run_id, key): _history(client, run, key)
        for run in runs
        for key in metric_keys
    }
    if not any(histories.values()):
        raise ValueError(
            f"metrics: none of the {len(runs)} selected runs logged any of "
            f"metrics={list(metric_keys)!r}"
        )

    labels = _run_labels(runs)
    ncols = min(len(metric_keys), _MAX_SUBPLOT_COLUMNS)
    nrows = math.ceil(len(metric_keys) / ncols)
    figure = Figure(
        figsize=(ncols * SUBPLOT_WIDTH_INCHES, nrows * SUBPLOT_HEIGHT_INCHES),
        dpi=PLOT_DPI,
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    for axis, key in zip(axes, metric_keys):
        plotted = 0
        for index, run in enumerate(runs):
            history = histories[(run.info.run_id, key)]
            if not history:
                continue
            steps = [step for step, _ in history]
            values = [value for _, value in history]
            axis.plot(steps, values, color=f"C{index % 10}", label=labels[run.info.run_id])
            plotted += 1
        axis.set_title(key)
        axis.set_xlabel("step")
        axis.set_ylabel(key)
        axis.grid(True, alpha=0.3)
        if plotted == 0:
            axis.text(0.5, 0.5, f"no run logged {key!r}", ha="center", va="center",
                      transform=axis.transAxes)
        elif plotted <= _MAX_LEGEND_ENTRIES:
            axis.legend(fontsize="small")
    for axis in axes[len(metric_keys):]:
        axis.set_visible(False)
    if title is None:
        title = (
            f"experiment {experiment}" if experiment is not None
            else f"children of run {parent_run_id}"
        )
    figure.suptitle(title)
    return figure


# --- selection and metric histories ------------------------------------------------


def _client(tracking_uri: str | None) -> mlflow.MlflowClient:
    import mlflow

    if tracking_uri is not None and (not isinstance(tracking_uri, str) or not tracking_uri):
        raise ValueError(
            f"tracking_uri must be a non-empty str or None, got tracking_uri={tracking_uri!r}"
        )
    return mlflow.MlflowClient(resolve_tracking_uri(tracking_uri))


def _select_runs(
    client: mlflow.MlflowClient,
    experiment: str | None,
    parent_run_id: str | None,
    page_size: int,
) -> list[mlflow.entities.Run]:
    """All active runs of the experiment, or all active children of the parent."""
    if (experiment is None) == (parent_run_id is None):
        raise ValueError(
            "pass exactly one of experiment and parent_run_id, got "
            f"experiment={experiment!r}, parent_run_id={parent_run_id!r}"
        )
    if experiment is not None:
        if not isinstance(experiment, str) or not experiment:
            raise ValueError(f"experiment must be a non-empty str, got experiment={experiment!r}")
        return _search_all_runs(client, _experiment_id(client, experiment), "", page_size)
    if not isinstance(parent_run_id, str) or not parent_run_id:
        raise ValueError(
            f"parent_run_id must be a non-empty str, got parent_run_id={parent_run_id!r}"
        )
    parent = _get_run(client, parent_run_id)
    return _search_all_runs(
        client,
        parent.info.experiment_id,
        f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        page_size,
    )


def _experiment_id(client: mlflow.MlflowClient, experiment: str) -> str:
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(experiment)
    if found is None:
        try:
            found = client.get_experiment(experiment)
        except MlflowException as error:
            if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise
            found = None
    if found is None:
        raise ValueError(
            f"experiment: no experiment named {experiment!r} in {client.tracking_uri}"
        )
    if found.lifecycle_stage != "active":
        raise ValueError(f"experiment: experiment {experiment!r} is deleted")
    return found.experiment_id


def _get_run(client: mlflow.MlflowClient, run_id: str) -> mlflow.entities.Run:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        # Only "no such run" becomes a ValueError; an unreachable server stays
        # the MlflowException it is.
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        raise ValueError(
            f"parent_run_id: no run with id {run_id!r} in {client.tracking_uri}"
        ) from None


def _search_all_runs(
    client: mlflow.MlflowClient, experiment_id: str, filter_string: str, page_size: int
) -> list[mlflow.entities.Run]:
    from mlflow.entities import ViewType

    runs: list[mlflow.entities.Run] = []
    page_token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=page_size,
            page_token=page_token,
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            return runs


def _history(
    client: mlflow.MlflowClient, run: mlflow.entities.Run, key: str
) -> list[tuple[int, float]]:
    """``(step, value)`` pairs sorted by step, one per step (the latest timestamp wins)."""
    if key not in run.data.metrics:  # spares a request for metrics the run lacks
        return []
    metrics = client.get_metric_history(run.info.run_id, key)
    by_step: dict[int, float] = {}
    for metric in sorted(metrics, key=lambda m: (m.step, m.timestamp)):
        by_step[metric.step] = metric.value
    return sorted(by_step.items())


def _final_value(history: list[tuple[int, float]]) -> float:
    return history[-1][1] if history else math.nan


def _best_value(key: str, history: list[tuple[int, float]]) -> float:
    values = [value for _, value in history if not math.isnan(value)]
    if not values:
        return math.nan
    return min(values) if lower_is_better(key) else max(values)


def _run_labels(runs: list[mlflow.entities.Run]) -> dict[str, str]:
    names = [run.info.run_name or run.info.run_id for run in runs]
    name_counts = collections.Counter(names)
    labels = {}
    for run, name in zip(runs, names):
        if name_counts[name] > 1:
            name = f"{name} ({run.info.run_id[:8]})"
        labels[run.info.run_id] = name
    return labels


def _check_keys(
    name: str, keys: Any, *, allow_none: bool, allow_empty: bool
) -> tuple[str, ...] | None:
    """A list or tuple of distinct non-empty strings (a bare str is refused)."""
    if keys is None and allow_none:
        return None
    if (
        not isinstance(keys, (list, tuple))
        or not all(isinstance(key, str) and key for key in keys)
        or len(set(keys)) != len(keys)
        or (not keys and not allow_empty)
    ):
        kind = "a list of distinct metric or param names" + ("" if allow_empty else " (not empty)")
        raise ValueError(f"{name} must be {kind}, got {name}={keys!r}")
    return tuple(keys)
