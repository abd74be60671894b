"""Time to target: how many steps, and how much wall time, each tuned optimizer needs to reach tuned Adam's score.

AlgoPerf's external-tuning protocol (Dahl et al. 2023), scaled down to a 2-core CPU machine. The
benchmark is the bake-off (``keras_optsuite.pipelines.compare.run_compare``) run once per workload
(``benchmarks/workloads/*.toml``), then an aggregation across workloads:

1. Every optimizer of :data:`OPTIMIZERS` (plus the full-batch ones of :data:`FULL_BATCH` on a
   convex workload) gets ``--trials`` tuning trials over its declared search space, its documented
   defaults first, then random draws (Keras Tuner's ``RandomSearch``), each at the workload's full
   step budget; every trial starts from the same weights and sees the data in the same order.
2. The target of a workload is the median, over the seeds, of tuned Adam's final validation score.
3. Each optimizer at its best settings runs on every seed; its score on the workload is the median
   over seeds of the optimizer steps (and the seconds of ``fit``) until the validation score first
   reaches the target, measured at epoch ends; infinite when it does not (most seeds never reach).
4. Across workloads: the performance profile of each optimizer (Dolan and Moré 2002): the fraction
   of workloads it solves within ``tau`` times the fewest steps any optimizer needed there; its
   integral over ``1 <= tau <= 4``, divided by 3 (AlgoPerf's score: 1 = fastest everywhere); and
   the geometric mean over the workloads it solves of its speed-up over Adam (Adam's steps over its
   steps).

One MLflow parent run per benchmark run (tag ``keras_optsuite.kind = time_to_target``), the
bake-offs below it; the tables, the profile plot and ``results.json`` are its artifacts and are
also written under ``outputs/time_to_target/``. A run is resumable: a finished workload (its
bake-off slot) is not run again, an interrupted one resumes where it stopped. Progress on stderr.

    .venv/bin/python benchmarks/time_to_target.py                  # all workloads, one after another
    .venv/bin/python benchmarks/time_to_target.py --workload digits_mlp   # one (same benchmark run)
    .venv/bin/python benchmarks/time_to_target.py --quick          # seconds: a smoke test (make test)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

HERE = Path(__file__).resolve().parent
WORKLOADS = HERE / "workloads"
OUTPUT = Path("outputs/time_to_target")
EXPERIMENT = "keras-optsuite-time-to-target"
BASELINE = "Adam"
#: Tuning trials per optimizer: its defaults, then one random draw (sized to the 2-core budget).
TRIALS = 2
TAU_MAX = 4.0

#: The contestants on every workload: Keras's SGD with Nesterov momentum, Adam, AdamW, Nadam and
#: Lion, then one optimizer per family of the registry (``OptimizerSpec.family``) and the three
#: wrappers a bake-off can search, each around Adam. The other members of a family (RAdam, Yogi,
#: ... beside Adan) are left out to fit the 2-core budget; ``--optimizers`` runs any list.
OPTIMIZERS = (
    "Adam", "AdamW", "SGDNesterov", "Nadam", "Lion",
    "Adan",               # adam: Adam with Nesterov-style gradient differences
    "QHM",                # momentum: quasi-hyperbolic momentum
    "MADGRAD",            # dual-averaging
    "SOAP",               # preconditioned: Adam in Shampoo's eigenbasis
    "Sophia",             # hessian: clipped diagonal Gauss-Newton preconditioning
    "Signum",             # sign
    "NovoGrad",           # layer-wise
    "Prodigy",            # learning-rate-free
    "ScheduleFreeAdamW",  # schedule-free
    "Lookahead(Adam)", "EMA(Adam)", "SAM(Adam)",
)  # fmt: skip
#: Full-batch methods: on convex workloads only (a linear model, no hidden layer).
FULL_BATCH = ("LBFGS",)

#: ``--quick``: one tiny workload, two optimizers, two trials, a few epochs.
QUICK_WORKLOAD = "digits_logistic"
QUICK_OPTIMIZERS = ("Adam", "SGDNesterov")
QUICK_OVERRIDES = ("training.epochs=3", "compare.tuning_epochs=2", "training.batch_size=128")


# -- the aggregation (pure NumPy: tests/test_time_to_target.py checks it by hand) ----------------


def performance_ratios(steps: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``steps[workload][optimizer]`` over the fewest steps on that workload (inf stays inf).

    A workload no optimizer solves has no best: every ratio there is inf.
    """
    ratios = {}
    for workload, row in steps.items():
        best = min(row.values())
        ratios[workload] = {name: (value / best if math.isfinite(best) else math.inf) for name, value in row.items()}
    return ratios


def performance_profile(ratios: Mapping[str, Mapping[str, float]], optimizer: str, tau: float) -> float:
    """rho(tau): the fraction of workloads on which ``optimizer`` is within ``tau`` times the best."""
    return sum(row[optimizer] <= tau for row in ratios.values()) / len(ratios)


def profile_integral(ratios: Mapping[str, Mapping[str, float]], optimizer: str, tau_max: float = TAU_MAX) -> float:
    """AlgoPerf's score: the integral of rho over [1, tau_max], divided by tau_max - 1 (so in [0, 1]).

    rho is a step function that jumps at the optimizer's ratios, so the integral is summed exactly
    piece by piece between those jumps.
    """
    edges = sorted({1.0, tau_max, *(r for row in ratios.values() if 1.0 < (r := row[optimizer]) < tau_max)})
    area = sum((right - left) * performance_profile(ratios, optimizer, left) for left, right in zip(edges, edges[1:]))
    return area / (tau_max - 1.0)


def geometric_mean_speedup(steps: Mapping[str, Mapping[str, float]], optimizer: str,
                           baseline: str = BASELINE) -> tuple[float, int]:
    """The geometric mean of ``baseline``'s steps over ``optimizer``'s, and on how many workloads.

    Only workloads both solve count (a speed-up over a run that never arrives is undefined); the
    count says how many that is. NaN when there are none.
    """
    speedups = [row[baseline] / row[optimizer] for row in steps.values()
                if math.isfinite(row[optimizer]) and math.isfinite(row[baseline])]
    return (float(np.exp(np.mean(np.log(speedups)))) if speedups else math.nan), len(speedups)


# -- one workload: a bake-off ------------------------------------------------------------------


def workload_paths(names: Sequence[str] | None) -> list[Path]:
    available = {path.stem: path for path in sorted(WORKLOADS.glob("*.toml"))}
    if not names:
        return list(available.values())
    unknown = [name for name in names if name not in available]
    if unknown:
        raise SystemExit(f"time_to_target: unknown workload {unknown[0]!r}; workloads: {', '.join(available)}")
    return [available[name] for name in names]


def is_convex(config: Mapping[str, Any]) -> bool:
    """A built-in MLP without hidden layers on classification: softmax regression, convex in its weights."""
    model = config["model"]
    return model["function"] is None and model["name"] == "mlp" and not model["hidden"]


def workload_config(path: Path, optimizers: Sequence[str], trials: int, quick: bool,
                    tracking_uri: str | None) -> dict[str, Any]:
    from keras_optsuite.pipelines.config import load_config

    config = load_config(path)
    contestants = list(optimizers) + (list(FULL_BATCH) if is_convex(config) and not quick else [])
    overrides = [f"compare.optimizers={json.dumps(contestants)}", f"compare.baseline={json.dumps(BASELINE)}",
                 f"compare.trials={trials}", "compare.tuner='random'", f"tracking.experiment='{EXPERIMENT}'"]
    if tracking_uri:
        overrides.append(f"tracking.tracking_uri={json.dumps(tracking_uri)}")
    return load_config(path, overrides + (list(QUICK_OVERRIDES) if quick else []))


def workload_result(name: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    """What the aggregation needs from a bake-off summary, per optimizer, keyed by optimizer."""
    metric = summary["metric"]
    rows = {}
    for row in summary["leaderboard"]:
        finals = np.asarray(row[f"{metric}_per_seed"], dtype=float)
        rows[row["optimizer"]] = {
            "steps": row["steps_to_target"], "seconds": row["seconds_to_target"],
            "steps_per_seed": row["steps_to_target_per_seed"], "seconds_per_seed": row["seconds_to_target_per_seed"],
            "reached": row["reached_target"], "final_mean": float(finals.mean()), "final_std": float(finals.std()),
            "hyperparameters": row["best_hyperparameters"], "run_id": row["optimizer_run_id"],
        }  # fmt: skip
    return {"workload": name, "metric": metric, "target": summary["target"], "compare_run_id": summary["parent_run_id"],
            "seconds": summary.get("seconds"), "optimizers": rows}


# -- reports -----------------------------------------------------------------------------------


def _ratio(value: float, baseline: float) -> str:
    return "not reached" if not math.isfinite(value) else f"{value / baseline:.2f}"


def _spread(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    text = f"{min(finite):.0f}-{max(finite):.0f}"
    return text + (f", {len(values) - len(finite)} never" if len(finite) < len(values) else "")


def workload_table(result: Mapping[str, Any]) -> str:
    """Markdown: one row per optimizer, fastest first, relative to Adam."""
    rows, metric = result["optimizers"], result["metric"]
    adam = rows[BASELINE]
    lines = [f"**{result['workload']}**: target {metric} = {result['target']:.4f} (tuned {BASELINE}, median of "
             f"{len(adam['steps_per_seed'])} seeds); {BASELINE} needs {adam['steps']:.0f} steps, "
             f"{adam['seconds']:.2f} s.", "",
             f"| optimizer | reached | steps to target (median; seeds' range) | steps / {BASELINE} | "
             f"wall time / {BASELINE} | final {metric} (mean ± std) |", "|---|---|---|---|---|---|"]
    for name, row in sorted(rows.items(), key=lambda item: (item[1]["steps"], item[1]["seconds"])):
        steps = "not reached" if not math.isfinite(row["steps"]) else f"{row['steps']:.0f}"
        lines.append(f"| {name} | {row['reached']} | {steps} ({_spread(row['steps_per_seed'])}) | "
                     f"{_ratio(row['steps'], adam['steps'])} | {_ratio(row['seconds'], adam['seconds'])} | "
                     f"{row['final_mean']:.4f} ± {row['final_std']:.4f} |")
    return "\n".join(lines) + "\n"


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Profiles, AlgoPerf scores and speed-ups across ``results`` (optimizers run on every one of them)."""
    names = [n for n in results[0]["optimizers"] if all(n in r["optimizers"] for r in results)]
    steps = {r["workload"]: {n: r["optimizers"][n]["steps"] for n in names} for r in results}
    seconds = {r["workload"]: {n: r["optimizers"][n]["seconds"] for n in names} for r in results}
    ratios, time_ratios = performance_ratios(steps), performance_ratios(seconds)
    rows = []
    for name in names:
        speedup, solved_both = geometric_mean_speedup(steps, name)
        time_speedup, _ = geometric_mean_speedup(seconds, name)
        rows.append({"optimizer": name, "algoperf_score_steps": profile_integral(ratios, name),
                     "algoperf_score_seconds": profile_integral(time_ratios, name),
                     "solved": sum(math.isfinite(steps[w][name]) for w in steps), "workloads": len(steps),
                     "geomean_speedup_steps": speedup, "geomean_speedup_seconds": time_speedup,
                     "speedup_workloads": solved_both})
    rows.sort(key=lambda row: -row["algoperf_score_steps"])
    return {"optimizers": names, "ratios": ratios, "time_ratios": time_ratios, "scores": rows}


def summary_table(aggregated: Mapping[str, Any]) -> str:
    lines = [f"| optimizer | solved | AlgoPerf score, steps (τ ≤ {TAU_MAX:g}) | AlgoPerf score, wall time | "
             f"geometric-mean speed-up over {BASELINE}, steps | same, wall time |", "|---|---|---|---|---|---|"]
    for row in aggregated["scores"]:
        speedup = "-" if math.isnan(row["geomean_speedup_steps"]) else f"{row['geomean_speedup_steps']:.2f}"
        time_speedup = "-" if math.isnan(row["geomean_speedup_seconds"]) else f"{row['geomean_speedup_seconds']:.2f}"
        lines.append(f"| {row['optimizer']} | {row['solved']}/{row['workloads']} | {row['algoperf_score_steps']:.3f} | "
                     f"{row['algoperf_score_seconds']:.3f} | {speedup} (on {row['speedup_workloads']}) | "
                     f"{time_speedup} |")
    return "\n".join(lines) + "\n"


def verdict(results: Sequence[Mapping[str, Any]]) -> str:
    """Which optimizers reach tuned Adam's target in fewer steps than Adam, per workload, and which never reach it."""
    lines = []
    for result in results:
        rows = result["optimizers"]
        adam = rows[BASELINE]["steps"]
        faster = [f"{n} ({adam / r['steps']:.2f}x)" for n, r in sorted(rows.items(), key=lambda i: i[1]["steps"])
                  if n != BASELINE and r["steps"] < adam]
        never = [n for n, r in rows.items() if not math.isfinite(r["steps"])]
        lines.append(f"- **{result['workload']}**: fewer steps than {BASELINE}: {', '.join(faster) or 'none'}; "
                     f"never reach the target: {', '.join(never) or 'none'}.")
    return "\n".join(lines) + "\n"


def profile_png(aggregated: Mapping[str, Any], path: Path, title: str) -> None:
    """Two panels: the performance profile by steps and by wall time, tau from 1 to the largest finite ratio."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(15, 6.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, 2, sharey=True)
    colors = [f"C{i}" for i in range(10)]
    styles = ["-", "--", ":", "-."]
    for axis, key, label in ((axes[0], "ratios", "optimizer steps"), (axes[1], "time_ratios", "wall time")):
        ratios = aggregated[key]
        finite = [r for row in ratios.values() for r in row.values() if math.isfinite(r)]
        right = max([TAU_MAX * 2, *finite]) * 1.1
        taus = np.geomspace(1.0, right, 400)
        for index, name in enumerate(aggregated["optimizers"]):
            rho = [performance_profile(ratios, name, tau) for tau in taus]
            axis.step(taus, rho, where="post", color=colors[index % 10], linestyle=styles[index // 10 % 4],
                      linewidth=2.2 if name == BASELINE else 1.4, label=name)
        axis.axvline(TAU_MAX, color="grey", linewidth=0.8, linestyle=":")
        axis.set_xscale("log", base=2)
        axis.set_xlabel(f"τ: within τ times the fewest {label} of any optimizer")
        axis.set_title(f"by {label}")
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"fraction of the {len(aggregated['ratios'])} workload(s) solved within τ")
    axes[1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.suptitle(f"{title}\nperformance profiles (Dolan-Moré); AlgoPerf's score integrates them up to "
                    f"τ = {TAU_MAX:g} (dotted); log-scale τ")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


# -- the benchmark run: state, MLflow parent, loop ---------------------------------------------


#: The benchmark run's state (its MLflow parent run, the finished workloads): ``<output>/slots/<STATE>.json``.
STATE = "time-to-target"


def _parent_run(client: Any, state: Any, experiment: str, quick: bool) -> str:
    """The MLflow parent run of the unfinished benchmark run of ``state`` (a ``Slot``), else a new one."""
    from keras_optsuite.callbacks import _run_params
    from keras_optsuite.callbacks._store import get_or_create_experiment

    run_id = state.state.get("parent_run_id")
    if run_id and not state.finished:
        client.update_run(run_id, status="RUNNING")
        print(f"[time-to-target] resuming benchmark run {run_id}", file=sys.stderr, flush=True)
        return run_id
    experiment_id = get_or_create_experiment(client, experiment)
    tags = _run_params.context_tags({"keras_optsuite.kind": "time_to_target",
                                     "keras_optsuite.quick": str(quick).lower()})
    run = client.create_run(experiment_id, run_name="time to target" + (" (quick)" if quick else ""), tags=tags)
    state.state = {}
    state.save("running", parent_run_id=run.info.run_id, workloads={})
    return run.info.run_id


def write_reports(results: list[dict[str, Any]], output: Path, missing: Sequence[str], command: str) -> dict[str, Path]:
    aggregated = aggregate(results)
    paths = {name: output / name for name in ("results.json", "tables.md", "profile.png")}
    done = ", ".join(r["workload"] for r in results)
    paths["results.json"].write_text(json.dumps({"command": command, "workloads": results,
                                                 "scores": aggregated["scores"], "ratios": aggregated["ratios"],
                                                 "time_ratios": aggregated["time_ratios"]}, indent=2))
    text = [f"# Time to target: {done}", "",
            f"`{command}`" + (f"; not run yet: {', '.join(missing)}" if missing else ""),
            "", "## Across workloads", "", summary_table(aggregated), "## Per workload", ""]
    text += [workload_table(result) for result in results]
    text += ["## Who beats tuned Adam where", "", verdict(results)]
    paths["tables.md"].write_text("\n".join(text))
    profile_png(aggregated, paths["profile.png"], f"Steps and wall time to tuned {BASELINE}'s target on "
                f"{len(results)} workload(s): {done}")
    return paths


def _report_only(output: Path, names: Sequence[str], command: str) -> int:
    state = json.loads((output / "slots" / f"{STATE}.json").read_text()) if (output / "slots").exists() else {}
    finished = state.get("workloads", {})
    results = [finished[name] for name in names if name in finished]
    if not results:
        print(f"time_to_target: no finished workload in {output}/slots/{STATE}.json to report", file=sys.stderr)
        return 1
    paths = write_reports(results, output, [name for name in names if name not in finished], command)
    print(paths["tables.md"].read_text())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one tiny workload, 2 optimizers, 2 trials (smoke test)")
    parser.add_argument("--workload", action="append", help="run only this workload (repeatable); the same "
                        "benchmark run collects them until all are done")
    parser.add_argument("--optimizers", nargs="+", help=f"instead of the default list ({len(OPTIMIZERS)})")
    parser.add_argument("--trials", type=int, default=TRIALS, help=f"tuning trials per optimizer (default {TRIALS})")
    parser.add_argument("--output", type=Path, default=None, help=f"default {OUTPUT} ({OUTPUT}/quick with --quick)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: MLflow's, else mlruns/mlflow.db)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch progress from the bake-offs")
    parser.add_argument("--report", action="store_true", help="only rewrite the tables and the plot from the "
                        "workloads the latest benchmark run finished (no training, nothing logged)")
    args = parser.parse_args(argv)
    trials = args.trials
    if trials < 1:
        parser.error(f"--trials must be >= 1, got {trials}")
    optimizers = tuple(args.optimizers or (QUICK_OPTIMIZERS if args.quick else OPTIMIZERS))
    if BASELINE not in optimizers:
        parser.error(f"--optimizers must include the baseline {BASELINE}, got {list(optimizers)}")
    output = args.output or (OUTPUT / "quick" if args.quick else OUTPUT)
    names = [QUICK_WORKLOAD] if args.quick else args.workload
    paths = workload_paths(names)
    all_names = [path.stem for path in workload_paths([QUICK_WORKLOAD] if args.quick else None)]
    command = "benchmarks/time_to_target.py" + (" --quick" if args.quick else "")
    if args.report:
        return _report_only(output, all_names, command)

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mlflow
    from mlflow.entities import Metric, RunTag

    from keras_optsuite.callbacks._store import resolve_tracking_uri
    from keras_optsuite.pipelines._unattended import Slot
    from keras_optsuite.pipelines.compare import _metric_name, run_compare

    configs = {path.stem: workload_config(path, optimizers, trials, args.quick, args.tracking_uri) for path in paths}
    tracking_uri = resolve_tracking_uri(next(iter(configs.values()))["tracking"]["tracking_uri"])
    client = mlflow.MlflowClient(tracking_uri)
    state = Slot(output, STATE)
    parent_run_id = _parent_run(client, state, EXPERIMENT, args.quick)
    slot = f"time-to-target-{parent_run_id}"
    started = time.monotonic()
    try:
        for index, (name, config) in enumerate(configs.items(), start=1):
            elapsed = time.monotonic() - started
            print(f"[time-to-target {index}/{len(configs)} {name}] bake-off of "
                  f"{len(config['compare']['optimizers'])} optimizers x ({trials} trials + "
                  f"{len(config['training']['seeds'])} seeds) ({elapsed:.0f} s elapsed)", file=sys.stderr, flush=True)
            summary = run_compare(config, slot=slot, quiet=args.quiet, output_root=output, out=sys.stderr,
                                  parent_run_id=parent_run_id, target_statistic="median")
            state.save(workloads={**state.state["workloads"], name: workload_result(name, summary)})
        finished = state.state["workloads"]
        results = [finished[name] for name in all_names if name in finished]
        missing = [name for name in all_names if name not in finished]
        reports = write_reports(results, output, missing, command)
        aggregated = json.loads(reports["results.json"].read_text())["scores"]
        now = int(time.time() * 1000)
        metrics = [Metric(f"{_metric_name(row['optimizer'])}.{key}", row[key], now, 0) for row in aggregated
                   for key in ("algoperf_score_steps", "geomean_speedup_steps") if math.isfinite(row[key])]
        client.log_batch(parent_run_id, metrics=metrics, tags=[
            RunTag("keras_optsuite.workloads_finished", ",".join(r["workload"] for r in results)),
            RunTag("keras_optsuite.workloads_missing", ",".join(missing))])
        for path in reports.values():
            client.log_artifact(parent_run_id, str(path))
        client.set_terminated(parent_run_id, "FINISHED")
        if not missing:
            state.save("finished")
    except BaseException as error:
        client.set_terminated(parent_run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")
        raise
    print(reports["tables.md"].read_text())
    print(f"written to {output}/ (tables.md, profile.png, results.json); MLflow run {parent_run_id} in experiment "
          f"{EXPERIMENT!r} of {tracking_uri}" + (f"; not run yet: {', '.join(missing)}" if missing else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
