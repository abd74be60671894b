"""``optsuite compare CONFIG``: the optimizer bake-off, answered fairly and tracked run by run.

For each optimizer of ``[compare] optimizers`` (a Keras name such as
``Adam``, ``SGDNesterov``, a keras-optsuite name, or a wrapper around one:
``Lookahead(RAdam)``):

1. **Tuning**, the same budget for every optimizer: ``trials`` trials of
   ``[compare] tuner`` over the optimizer's declared search space (its
   documented defaults first), each for ``tuning_epochs`` epochs, scored on
   the validation split, every trial from the same initial weights (those of
   the first seed) and the same data order.
2. **Final runs** at the best settings, one per seed of ``[training]
   seeds``: each seed gives every optimizer the same initial weights and the
   same data order. Only these runs touch the held-out test split.

The leaderboard ranks the optimizers by the mean test score. Beside it:
the spread over seeds, the validation score, the steps and wall time to
reach the *target* (the baseline's mean final validation score: how fast
each optimizer gets as good as the tuned baseline; median over seeds,
"not reached" when most seeds never do), and the tuning cost.

MLflow: one parent run for the bake-off; below it one run per optimizer
(its tuner's search run), and below those the trial runs and the seed runs
(tag ``keras_optsuite.kind``: ``trial`` or ``seed``). On the parent run:
``leaderboard.csv``, ``leaderboard.md``, ``learning_curves.png`` (the
validation score of each optimizer against optimizer steps, mean over seeds)
and ``report.html`` (everything in one self-contained page), also written
under ``outputs/compare/<config name>/``; tags name the winner, its best
seed run and that run's logged model (what ``optsuite promote`` registers).
"""

from __future__ import annotations

import base64
import csv
import html
import json
import math
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

import keras
import numpy as np

from keras_optsuite.pipelines._common import (
    OUTPUT_ROOT,
    Contestant,
    Context,
    Curve,
    context,
    evaluate,
    first_reaching,
    parse_contestant,
)
from keras_optsuite.pipelines._unattended import PipelineLock, Progress, Slot, say
from keras_optsuite.pipelines.config import ConfigError
from keras_optsuite.pipelines.tune import run_search

TAG = "keras_optsuite."


def _contestants(config: Mapping[str, Any]) -> tuple[list[Contestant], Contestant]:
    section = config["compare"]
    contestants = [parse_contestant(name, "compare.optimizers") for name in section["optimizers"]]
    labels = [c.label for c in contestants]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"compare.optimizers names an optimizer twice: {labels}")
    baseline = parse_contestant(section["baseline"], "compare.baseline")
    if baseline.label not in labels:
        raise ConfigError(f"compare.baseline = {section['baseline']!r} must be one of compare.optimizers {labels}")
    return contestants, baseline


class _Announce(keras.callbacks.Callback):
    """Prints "trial k/n" when each trial starts.

    Keras Tuner deep-copies the callbacks of every trial; the counter lives
    in a function, which ``deepcopy`` shares instead of copying, so every
    copy counts on the same one.
    """

    def __init__(self, label: str, trials: int, quiet: bool) -> None:
        super().__init__()
        counter = {"trial": 0}

        def announce() -> None:
            counter["trial"] += 1
            say(f"[compare {label}] tuning trial {min(counter['trial'], trials)}/{trials}", quiet)

        self.announce = announce

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.announce()


def _seed_runs(ctx: Context, contestant: Contestant, model: Any, hp: Any, parent_run_id: str,
               state: Slot, finished: list[dict[str, Any]], quiet: bool) -> list[dict[str, Any]]:
    """One tracked run per seed at the settings ``hp``; ``finished`` (from a crashed run) are kept.

    Each seed's result is saved in the slot as soon as it exists, so a
    resumed slot neither repeats nor duplicates a finished seed run; an
    unfinished one continues from its backup, in the same MLflow run.
    """
    import mlflow
    from mlflow.entities import Metric

    from keras_optsuite.callbacks import MLflowTracking

    training, data = ctx.config["training"], ctx.data
    client = mlflow.MlflowClient(ctx.tracking_uri)
    results = list(finished)
    for seed in training["seeds"]:
        if any(result["seed"] == seed for result in results):
            continue
        model.seed = seed
        with ctx.strategy().scope():
            network = model.build(hp)
        backup = state.directory / "backups" / f"{contestant.label}-seed{seed}" if state.directory else None
        tracking = MLflowTracking(
            experiment=ctx.experiment, tracking_uri=ctx.tracking_uri, parent_run_id=parent_run_id,
            run_name=f"{contestant.label} seed {seed}", seed=seed, training_data=data.x_train[:2],
            tags={TAG + "kind": "seed", TAG + "optimizer": contestant.label, TAG + "seed": str(seed)},
            backup_dir=backup,
        )  # fmt: skip
        curve = Curve(backup.with_name(backup.name + ".curve.json") if backup is not None else None)
        callbacks = [curve, tracking, Progress(f"compare {contestant.label} seed {seed}", training["epochs"], quiet)]
        if backup is not None:
            callbacks.insert(callbacks.index(tracking) + 1, keras.callbacks.BackupAndRestore(str(backup)))
        with tracking:
            model.fit(hp, network, data.x_train, data.y_train, validation_data=(data.x_val, data.y_val),
                      epochs=training["epochs"], batch_size=training["batch_size"], verbose=0, callbacks=callbacks)
        test = evaluate(network, data.x_test, data.y_test, training["batch_size"]) if len(data.x_test) else {}
        step = curve.rows[-1]["step"] if curve.rows else 0
        now = int(time.time() * 1000)
        assert tracking.run_id is not None  # the fit started the run
        client.log_batch(tracking.run_id, metrics=[Metric(f"test_{k}", v, now, int(step)) for k, v in test.items()])
        results.append({"seed": seed, "run_id": tracking.run_id, "curve": curve.rows, "test": test})
        state.save(partial={**state.state.get("partial", {}), contestant.label: results})
    return results


def _summarize(ctx: Context, label: str, result: Mapping[str, Any], target: float) -> dict[str, Any]:
    metric, lower = ctx.metric, ctx.direction == "min"
    test_key = metric.removeprefix("val_")
    seeds = result["seeds"]
    tests = [s["test"].get(test_key, math.nan) for s in seeds]
    finals = [s["curve"][-1][metric] if s["curve"] else math.nan for s in seeds]
    reached = [first_reaching(s["curve"], metric, target, lower) for s in seeds]
    steps = [row["step"] if row else math.inf for row in reached]
    seconds = [row["seconds"] if row else math.inf for row in reached]
    per_seed = {"seeds": [s["seed"] for s in seeds], "steps_to_target_per_seed": steps,
                "seconds_to_target_per_seed": seconds, f"{metric}_per_seed": finals}
    return {
        "optimizer": label,
        f"test_{test_key}_mean": float(np.mean(tests)),
        f"test_{test_key}_std": float(np.std(tests)),
        f"{metric}_mean": float(np.mean(finals)),
        "reached_target": f"{sum(r is not None for r in reached)}/{len(seeds)}",
        "steps_to_target": float(np.median(steps)),
        "seconds_to_target": float(np.median(seconds)),
        "tuning_trials": result["trials"],
        "tuning_seconds": round(result["tuning_seconds"], 1),
        "best_hyperparameters": json.dumps(result["hyperparameters"], default=str, sort_keys=True),
        "optimizer_run_id": result["run_id"],
        **per_seed,
    }


#: How the target is drawn from the tuned baseline's final validation scores, one per seed.
TARGET_STATISTICS: dict[str, Callable[[Sequence[float]], Any]] = {"mean": np.mean, "median": np.median}


def leaderboard(ctx: Context, results: Mapping[str, Mapping[str, Any]], baseline: str,
                target_statistic: str = "mean") -> tuple[list[dict], float]:
    """Rows ranked by mean test score (then validation score), and the target (the baseline's mean final score,
    or its ``target_statistic`` over seeds)."""
    metric = ctx.metric
    baseline_finals = [s["curve"][-1][metric] for s in results[baseline]["seeds"] if s["curve"]]
    target = float(TARGET_STATISTICS[target_statistic](baseline_finals))
    rows = [_summarize(ctx, label, result, target) for label, result in results.items()]
    test_key = f"test_{metric.removeprefix('val_')}_mean"
    sign = 1.0 if ctx.direction == "min" else -1.0

    def rank_key(row: dict[str, Any]) -> tuple[float, float]:
        score = row[test_key] if np.isfinite(row[test_key]) else row[f"{metric}_mean"]
        return (sign * score if np.isfinite(score) else math.inf, row["steps_to_target"])

    rows.sort(key=rank_key)
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows, target


def _format(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "not reached"
        return f"{value:.4g}"
    return str(value)


def markdown(rows: list[dict[str, Any]], ctx: Context, target: float, baseline: str,
             target_statistic: str = "mean") -> str:
    metric, test_key = ctx.metric, f"test_{ctx.metric.removeprefix('val_')}"
    header = ["rank", "optimizer", f"{test_key} (mean ± std)", f"{metric}", "reached target",
              "steps to target", "seconds to target", "tuning trials", "tuning s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row["rank"], row["optimizer"],
                 f"{row[test_key + '_mean']:.4f} ± {row[test_key + '_std']:.4f}", f"{row[metric + '_mean']:.4f}",
                 row["reached_target"], _format(row["steps_to_target"]), _format(row["seconds_to_target"]),
                 row["tuning_trials"], row["tuning_seconds"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    lines.append(f"Target: {metric} = {target:.4f}, the {target_statistic} final score of the tuned baseline "
                 f"{baseline} "
                 f"({'lower' if ctx.direction == 'min' else 'higher'} is better); steps and seconds are "
                 "medians over seeds.")
    return "\n".join(lines) + "\n"


def _curves_png(ctx: Context, results: Mapping[str, Mapping[str, Any]], target: float, path: Path) -> None:
    """The validation score against optimizer steps, whole (left) and near the target (right)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(13, 5))
    FigureCanvasAgg(figure)
    whole, near = figure.subplots(1, 2)
    finals = []
    for index, (label, result) in enumerate(results.items()):
        curves = [s["curve"] for s in result["seeds"] if s["curve"]]
        length = min(len(c) for c in curves)
        steps = [row["step"] for row in curves[0][:length]]
        values = np.array([[row[ctx.metric] for row in c[:length]] for c in curves], dtype=float)
        mean = np.nanmean(values, axis=0)
        finals.append(mean[-1])
        for axis in (whole, near):
            axis.plot(steps, mean, color=f"C{index % 10}", label=label, marker="o", markersize=3)
            axis.fill_between(steps, np.nanmin(values, axis=0), np.nanmax(values, axis=0),
                              color=f"C{index % 10}", alpha=0.15)
    for axis in (whole, near):
        axis.axhline(target, color="black", linestyle="--", linewidth=1, label="target (tuned baseline)")
        axis.set_xlabel("optimizer step")
    finite = [value for value in finals + [target] if np.isfinite(value)]
    if finite:
        spread = max(finite) - min(finite) or abs(target) * 0.01 or 0.01
        near.set_ylim(min(finite) - 0.5 * spread, max(finite) + 0.5 * spread)
    whole.set_ylabel(f"{ctx.metric} (mean over seeds; band: min to max)")
    whole.set_title(f"bake-off {ctx.name}: {ctx.data.name}")
    near.set_title("near the final scores")
    whole.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def _report_html(ctx: Context, table: str, rows: list[dict[str, Any]], png: Path, parent_run_id: str) -> str:
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    header = list(rows[0]) if rows else []
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_format(row[key]))}</td>" for key in header) + "</tr>"
                   for row in rows)
    sizes = ", ".join(f"{k} {v}" for k, v in ctx.data.sizes().items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Bake-off {html.escape(ctx.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:nth-child(2){{text-align:left}}</style>
</head><body>
<h1>Optimizer bake-off: {html.escape(ctx.name)}</h1>
<p>Data {html.escape(ctx.data.name)} ({html.escape(sizes)}); score {html.escape(ctx.metric)};
MLflow run <code>{html.escape(parent_run_id)}</code> in experiment <code>{html.escape(ctx.experiment)}</code>
of <code>{html.escape(ctx.tracking_uri)}</code>.</p>
<h2>Leaderboard</h2><pre>{html.escape(table)}</pre>
<h2>Learning curves</h2><img alt="learning curves" src="data:image/png;base64,{image}">
<h2>All columns</h2><table><tr>{''.join(f'<th>{html.escape(k)}</th>' for k in header)}</tr>{body}</table>
<h2>Config</h2><pre>{html.escape(json.dumps(ctx.config, indent=2, default=str))}</pre>
</body></html>
"""


def _write_reports(ctx: Context, rows: list[dict], target: float, baseline: str, results: Mapping[str, Any],
                   directory: Path, parent_run_id: str, target_statistic: str = "mean") -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = {name: directory / name for name in ("leaderboard.csv", "leaderboard.md", "learning_curves.png",
                                                  "report.html")}
    with paths["leaderboard.csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    table = markdown(rows, ctx, target, baseline, target_statistic)
    paths["leaderboard.md"].write_text(table)
    _curves_png(ctx, results, target, paths["learning_curves.png"])
    paths["report.html"].write_text(_report_html(ctx, table, rows, paths["learning_curves.png"], parent_run_id))
    return paths


def _winner(ctx: Context, rows: list[dict], results: Mapping[str, Any]) -> dict[str, Any]:
    """The first-ranked optimizer, its seed run with the best validation score, and that run's model."""
    import mlflow

    label = rows[0]["optimizer"]
    lower = ctx.direction == "min"
    seeds = [s for s in results[label]["seeds"] if s["curve"]]
    best = sorted(seeds, key=lambda s: s["curve"][-1][ctx.metric] * (1 if lower else -1))[0]
    client = mlflow.MlflowClient(ctx.tracking_uri)
    outputs = client.get_run(best["run_id"]).outputs
    models = {client.get_logged_model(o.model_id).name: o.model_id for o in (outputs.model_outputs if outputs else [])}
    return {"optimizer": label, "run_id": best["run_id"], "model_id": models.get("final"), "test": best["test"]}


def run_compare(config: Mapping[str, Any], *, slot: str | None = None, quiet: bool = False,
                output_root: Path = OUTPUT_ROOT, out: TextIO | None = None, workers: int = 0,
                parent_run_id: str | None = None, target_statistic: str = "mean") -> dict[str, Any]:
    """Run the bake-off of ``config``; returns its summary (also printed on ``out``).

    ``workers`` > 0 runs each optimizer's tuning on that many Keras Tuner
    worker processes (and a chief); the final seed runs stay in this process.
    ``parent_run_id`` makes the bake-off's run a child of that MLflow run (in
    the same experiment; e.g. one benchmark run above several bake-offs).
    ``target_statistic`` (``"mean"`` or ``"median"``) is how the target is
    drawn from the tuned baseline's final scores over seeds.
    """
    out = out if out is not None else sys.stdout
    if target_statistic not in TARGET_STATISTICS:
        raise ValueError(f"target_statistic={target_statistic!r}: expected one of {', '.join(TARGET_STATISTICS)}")
    import mlflow

    from keras_optsuite.callbacks import _run_params
    from keras_optsuite.callbacks._store import get_or_create_experiment

    contestants, baseline = _contestants(config)
    ctx = context(config, "compare", "compare", output_root)
    section, training = config["compare"], config["training"]
    epochs = section["tuning_epochs"] or training["epochs"]
    with PipelineLock(ctx.output, f"compare {ctx.name}"):
        state = Slot(ctx.output, slot)
        if state.finished:
            summary = state.state.get("summary", {})
            print(f"slot {slot} of compare {ctx.name} already finished (run {state.state.get('parent_run_id')}): "
                  "nothing to do", file=out)
            return summary
        client = mlflow.MlflowClient(ctx.tracking_uri)
        experiment_id = get_or_create_experiment(client, ctx.experiment)
        above_run_id, parent_run_id = parent_run_id, state.state.get("parent_run_id") if state.resumed else None
        if parent_run_id is None:
            tags = _run_params.context_tags({TAG + "kind": "compare", TAG + "config": ctx.name,
                                             **({TAG + "slot": slot} if slot else {}),
                                             **({"mlflow.parentRunId": above_run_id} if above_run_id else {})})
            parent = client.create_run(experiment_id, run_name=f"compare {ctx.name}" + (f" {slot}" if slot else ""),
                                       tags=tags)
            parent_run_id = parent.info.run_id
            params = _run_params.flatten({k: v for k, v in config.items() if not k.startswith("_")}, "config")
            params.update({f"data.{k}_samples": str(v) for k, v in ctx.data.sizes().items()})
            from mlflow.entities import Param

            client.log_batch(parent_run_id, params=[Param(k, v) for k, v in params.items()])
        else:
            client.update_run(parent_run_id, status="RUNNING")
            say(f"[compare {ctx.name}] resuming slot {slot}: run {parent_run_id}", quiet)
        state.save("running", parent_run_id=parent_run_id)
        results: dict[str, Any] = dict(state.state.get("results", {}))
        kept = len(results)  # finished by a crashed run: they took no time here
        workspace = ctx.output / (f"slots/{slot}" if slot else "latest")
        started = time.monotonic()
        try:
            for index, contestant in enumerate(contestants, start=1):
                label = contestant.label
                if label in results:
                    say(f"[compare {index}/{len(contestants)} {label}] done in the crashed run: kept", quiet)
                    continue
                done = len(results) - kept
                elapsed = time.monotonic() - started
                left = f", ~{elapsed / done * (len(contestants) - len(results)):.0f} s left" if done else ""
                say(f"[compare {index}/{len(contestants)} {label}] tuning {section['trials']} trials "
                    f"x {epochs} epochs ({elapsed:.0f} s elapsed{left})", quiet)
                tuning_started = time.monotonic()
                tuner = run_search(ctx, section, [contestant], trials=section["trials"], epochs=epochs,
                                   directory=workspace / "tuning", project=label, run_name=label,
                                   resume=state.resumed, seed=int(training["seeds"][0]), parent_run_id=parent_run_id,
                                   workers=workers, quiet=quiet, callbacks=[_Announce(label, section["trials"], quiet)])
                tuning_seconds = time.monotonic() - tuning_started
                model = tuner.hypermodel
                best = tuner.oracle.get_best_trials(1)
                if not best:
                    raise RuntimeError(f"no trial of {label} completed: see the FAILED trial runs of run "
                                       f"{tuner.parent_run_id}")
                hp = best[0].hyperparameters
                say(f"[compare {index}/{len(contestants)} {label}] final runs on {len(training['seeds'])} seeds "
                    f"at the best settings", quiet)
                finished = state.state.get("partial", {}).get(label, [])
                seeds = _seed_runs(ctx, contestant, model, hp, tuner.parent_run_id, state, finished, quiet)
                results[label] = {
                    "run_id": tuner.parent_run_id,
                    "trials": len(tuner.oracle.trials),
                    "tuning_seconds": tuning_seconds,
                    "hyperparameters": {k: v for k, v in hp.values.items() if hp.is_active(k)},
                    "seeds": seeds,
                }
                state.save(results=results)
            rows, target = leaderboard(ctx, {c.label: results[c.label] for c in contestants}, baseline.label,
                                       target_statistic)
            winner = _winner(ctx, rows, results)
            paths = _write_reports(ctx, rows, target, baseline.label, results, ctx.output, parent_run_id,
                                   target_statistic)
            for path in paths.values():
                client.log_artifact(parent_run_id, str(path))
            from mlflow.entities import Metric, RunTag

            now = int(time.time() * 1000)
            test_key = f"test_{ctx.metric.removeprefix('val_')}_mean"
            client.log_batch(parent_run_id, metrics=[Metric("target", target, now, 0)] + [
                Metric(f"{_metric_name(row['optimizer'])}.{test_key}", row[test_key], now, 0) for row in rows
                if np.isfinite(row[test_key])], tags=[
                RunTag(TAG + "winner", winner["optimizer"]), RunTag(TAG + "winner_run_id", winner["run_id"]),
                RunTag(TAG + "winner_model_id", winner["model_id"] or ""), RunTag(TAG + "metric", ctx.metric)])
            client.set_terminated(parent_run_id, "FINISHED")
        except BaseException as error:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            _fail(client, parent_run_id, status)
            state.save("failed", results=results)
            raise
        summary = {
            "parent_run_id": parent_run_id, "experiment": ctx.experiment, "tracking_uri": ctx.tracking_uri,
            "metric": ctx.metric, "target": target, "winner": winner, "leaderboard": rows,
            "report": str(paths["report.html"].absolute()), "seconds": round(time.monotonic() - started, 1),
        }  # fmt: skip
        state.save("finished", summary=summary)
    print(markdown(rows, ctx, target, baseline.label, target_statistic), file=out)
    print(f"winner: {winner['optimizer']} (run {winner['run_id']}, logged model {winner['model_id']})", file=out)
    print(f"report: {summary['report']}", file=out)
    print(f"MLflow: bake-off run {parent_run_id} in experiment {ctx.experiment!r}; open the UI with", file=out)
    print(f"  optsuite ui {config['_source']['path'] or ''}".rstrip(), file=out)
    print(f"  (or: mlflow ui --backend-store-uri {ctx.tracking_uri}, then 'Model training')", file=out)
    return summary


def _metric_name(label: str) -> str:
    """``Lookahead(RAdam)`` as MLflow accepts in a metric name: ``Lookahead:RAdam``."""
    return re.sub(r"[^\w.\- /]", "", label.replace("(", ":"))


def _fail(client: Any, run_id: str, status: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="optsuite-compare-") as directory:
        path = Path(directory) / "traceback.txt"
        path.write_text(traceback.format_exc())
        try:
            client.log_artifact(run_id, str(path))
        finally:
            client.set_terminated(run_id, status)
