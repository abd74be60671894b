"""The parent run's results table and plots."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any


def write_results(rows: list[dict[str, Any]], path: Path) -> None:
    """One CSV row per trial; columns: the fixed ones, then every hyperparameter seen."""
    fixed = ["trial_id", "status", "score", "best_step", "pruned_at_epoch", "run_id"]
    columns = fixed + sorted({key for row in rows for key in row} - set(fixed))
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _figure(panels: int, width: float = 4.5, per_row: int = 4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = min(panels, per_row)
    rows = -(-panels // columns)
    figure = Figure(figsize=(width * columns, 3.5 * rows))
    FigureCanvasAgg(figure)  # no pyplot: the user's backend is left alone
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for axis in axes[panels:]:
        axis.set_visible(False)
    return figure, axes[:panels]


def plot_objective(scores: list[tuple[int, float]], direction: str, name: str, path: Path) -> None:
    """The objective of each completed trial and the best so far, by trial number."""
    figure, (axis,) = _figure(1, 6.0)
    finite = [(i, s) for i, s in scores if s is not None and math.isfinite(s)]
    if finite:
        axis.scatter(*zip(*finite), label="trial")
        best, steps = None, []
        for index, score in finite:
            better = best is None or (score < best if direction == "min" else score > best)
            best = score if better else best
            steps.append((index, best))
        axis.step(*zip(*steps), where="post", color="C1", label="best so far")
        axis.legend()
    axis.set_xlabel("trial")
    axis.set_ylabel(name)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_hyperparameters(rows: list[dict[str, Any]], names: list[str], objective: str, path: Path) -> None:
    """The objective against each hyperparameter (log axis for log-sampled ones)."""
    figure, axes = _figure(max(len(names), 1), 3.5)
    for axis, name in zip(axes, names):
        points = [(row[name], row["score"]) for row in rows
                  if row.get(name) not in (None, "") and isinstance(row.get("score"), float)
                  and math.isfinite(row["score"])]
        if points:
            xs, ys = zip(*points)
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs):
                axis.scatter(xs, ys)
                if min(xs) > 0 and max(xs) / min(xs) > 50:
                    axis.set_xscale("log")
            else:
                labels = sorted({str(x) for x in xs})
                axis.scatter([labels.index(str(x)) for x in xs], ys)
                axis.set_xticks(range(len(labels)))
                axis.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        axis.set_title(name, fontsize=8)
        axis.set_ylabel(objective)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
