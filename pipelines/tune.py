"""``optsuite tune CONFIG``: one tracked Keras Tuner search over ``[tune] optimizers``.

The search is :mod:`keras_optsuite.tuning`'s (one MLflow parent run, a
child run per trial, pruning, failures kept); this module builds it from a
config, and :func:`make_tuner` is shared with the bake-off, which runs one
search per optimizer.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

import keras

from keras_optsuite.pipelines._common import OUTPUT_ROOT, Contestant, Context, context, parse_contestant
from keras_optsuite.pipelines._unattended import PipelineLock, Progress, Slot, say
from keras_optsuite.pipelines.data import read_data, save_data
from keras_optsuite.tuning import OptimizerHyperModel

PRUNING_WARMUP_EPOCHS = 2
PRUNING_MIN_TRIALS = 2


ORDER_SEED_OFFSET = 10_000


class SeededHyperModel(OptimizerHyperModel):
    """An ``OptimizerHyperModel`` whose models start from the weights of :attr:`seed`, in one data order.

    Every model it builds gets the initial weights drawn from ``seed``, and
    after the optimizer is built Keras's global seed is set again (to
    ``seed + 10000``), so the ``fit`` that follows shuffles the data in the
    same order whatever the optimizer: equal starting points and equal data
    for every trial and every optimizer at that seed. Set :attr:`seed` to
    move to the next seed. Contestants with a wrapper must be alone (the
    wrapper is then fixed, not searched).
    """

    def __init__(self, ctx: Context, contestants: Sequence[Contestant], seed: int) -> None:
        wrappers = sorted({c.wrapper for c in contestants if c.wrapper})
        if wrappers and len(contestants) > 1:
            raise ValueError("a searched optimizer list cannot mix wrapped optimizers; compare them instead")
        loss, metrics = ctx.loss_and_metrics()
        super().__init__(lambda hp: ctx.build_model(self.seed), loss=loss, metrics=metrics,
                         optimizers=[c.family for c in contestants], wrappers=wrappers or None)
        self.seed = int(seed)

    def build(self, hp: Any) -> keras.Model:
        model = super().build(hp)
        keras.utils.set_random_seed(self.seed + ORDER_SEED_OFFSET)
        return model


def make_tuner(ctx: Context, section: Mapping[str, Any], model: Any, *, trials: int, epochs: int,
               directory: Path, project: str, run_name: str, overwrite: bool, seed: int) -> Any:
    """The tracked tuner ``section["tuner"]`` names, with ``trials`` trials (Hyperband: ``epochs`` max)."""
    import keras_tuner

    from keras_optsuite import tuning

    objective = keras_tuner.Objective(ctx.metric, direction=ctx.direction)
    pruning = (tuning.MedianPruning(warmup_epochs=PRUNING_WARMUP_EPOCHS, min_trials=PRUNING_MIN_TRIALS)
               if section["pruning"] else None)
    common = dict(objective=objective, seed=seed, experiment=ctx.experiment, tracking_uri=ctx.tracking_uri,
                  run_name=run_name, directory=str(directory), project_name=project, overwrite=overwrite)
    if ctx.config["training"]["strategy"] != "default":  # every trial built and trained under it
        common["distribution_strategy"] = ctx.strategy()
    kind = section["tuner"]
    if kind == "hyperband":
        return tuning.Hyperband(model, max_epochs=epochs, **common)
    tuner_class = {"random": tuning.RandomSearch, "bayesian": tuning.BayesianOptimization,
                   "grid": tuning.GridSearch}[kind]
    return tuner_class(model, max_trials=trials, pruning=pruning, **common)


def run_search(ctx: Context, section: Mapping[str, Any], contestants: Sequence[Contestant], *, trials: int,
               epochs: int, directory: Path, project: str, run_name: str, resume: bool, seed: int,
               parent_run_id: str | None = None, workers: int = 0, callbacks: Sequence[Any] = (),
               quiet: bool = False) -> Any:
    """One tracked search over ``contestants``, here or on ``workers`` worker processes; returns its tuner.

    With ``workers`` > 0 the search runs on Keras Tuner's distributed
    engine: a chief process (the oracle) and ``workers`` worker processes
    started by :func:`keras_optsuite.distribute.launch_search`, each
    rebuilding this search from the config and training on the data this
    process split, handed over in the search's directory (``data.npz``:
    ``data.function`` runs once); their output is
    prefixed ``[tuner i]`` on stderr. The tuner returned is then reloaded
    here from the shared directory: its oracle holds every worker's trials.
    ``resume`` keeps what an interrupted search left in ``directory``.
    """
    model = SeededHyperModel(ctx, contestants, seed)
    settings: dict[str, Any] = dict(trials=trials, epochs=epochs, directory=directory, project=project,
                                    run_name=run_name, seed=seed)
    if workers:
        _search_on_workers(ctx, section, contestants, workers, parent_run_id, resume, quiet, settings)
        with contextlib.redirect_stdout(sys.stderr if not quiet else io.StringIO()):  # "Reloading Tuner from"
            tuner = make_tuner(ctx, section, model, overwrite=False, **settings)
        if tuner.parent_run_id is None:  # the chief's parent run, as the workers read it
            tuner.parent_run_id = json.loads(tuner._parent_file().read_text())["parent_run_id"]
        return tuner
    tuner = make_tuner(ctx, section, model, overwrite=not resume, **settings)
    tuner.search_parent_run_id = parent_run_id
    tuner.search(ctx.data.x_train, ctx.data.y_train, validation_data=(ctx.data.x_val, ctx.data.y_val),
                 epochs=epochs, batch_size=ctx.config["training"]["batch_size"], verbose=0,
                 callbacks=list(callbacks))
    return tuner


def _search_on_workers(ctx: Context, section: Mapping[str, Any], contestants: Sequence[Contestant],
                       workers: int, parent_run_id: str | None, resume: bool, quiet: bool,
                       settings: Mapping[str, Any]) -> None:
    import collections
    import shutil

    from keras_optsuite.distribute import launch_search

    project_dir = Path(settings["directory"]) / settings["project"]
    if not resume:
        shutil.rmtree(project_dir, ignore_errors=True)  # what overwrite=True does, before any process starts
    project_dir.mkdir(parents=True, exist_ok=True)
    spec = project_dir / "search_task.json"
    data = project_dir / "data.npz"  # every process trains on these rows: data.function runs once, here
    save_data(ctx.data, data)
    spec.write_text(json.dumps({
        "config": ctx.config, "command": ctx.command, "section": dict(section),
        "contestants": [c.label for c in contestants], "parent_run_id": parent_run_id,
        "settings": settings, "data": str(data),
    }, default=str))  # the directory (a Path) as a string
    lines: collections.deque[str] = collections.deque(maxlen=40)
    log_path = project_dir / "search.log"
    ours = f"[{settings['run_name']}] "

    class _Output(io.StringIO):
        """Every process's prefixed output into ``search.log``; this package's progress lines on stderr too."""

        def __init__(self, log: TextIO) -> None:
            super().__init__()
            self.log = log

        def write(self, text: str) -> int:
            self.log.write(text)
            for line in text.splitlines():
                lines.append(line)
                if not quiet and line.partition("] ")[2].startswith(ours):
                    print(line, file=sys.stderr, flush=True)
            return len(text)

        def flush(self) -> None:
            self.log.flush()

    threads = str(max(1, (os.cpu_count() or 1) // workers))
    say(f"{ours}searching on {workers} worker processes and a chief (the oracle); their output: {log_path}", quiet)
    with log_path.open("a") as log:
        code = launch_search([sys.executable, "-m", "keras_optsuite.pipelines._search_task", str(spec)], workers,
                             env={"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1",
                                  "TF_CPP_MIN_LOG_LEVEL": "2"},
                             output=_Output(log))
    if code in (128 + 2, 128 + 15):  # SIGINT or SIGTERM reached the launcher (and every process)
        raise KeyboardInterrupt
    if code != 0:
        shown = "\n".join(lines)
        raise RuntimeError(f"the distributed search {settings['run_name']!r} failed (exit code {code}); the "
                           f"whole output is in {log_path}; its end:\n{shown}")


def run_search_task(spec_path: str) -> None:
    """One process of :func:`run_search` with workers: the chief or a worker, by ``KERASTUNER_TUNER_ID``."""
    spec = json.loads(Path(spec_path).read_text())
    settings = spec["settings"]
    ctx = context(spec["config"], spec["command"], spec["command"], data=read_data(Path(spec["data"])))
    contestants = [parse_contestant(label, f"{spec['command']}.optimizers") for label in spec["contestants"]]
    settings["directory"] = Path(settings["directory"])
    role = os.environ.get("KERASTUNER_TUNER_ID", "?")

    class _Announce(keras.callbacks.Callback):
        def on_train_begin(self, logs: dict | None = None) -> None:
            print(f"[{settings['run_name']}] {role}: trial started", flush=True)

        def on_train_end(self, logs: dict | None = None) -> None:
            shown = ", ".join(f"{k} {float(v):.4g}" for k, v in (logs or {}).items() if k.startswith("val_"))
            print(f"[{settings['run_name']}] {role}: trial done, {shown}", flush=True)

    run_search(ctx, spec["section"], contestants, resume=True, parent_run_id=spec["parent_run_id"],
               callbacks=[_Announce()], **settings)


def run_tune(config: Mapping[str, Any], *, slot: str | None = None, quiet: bool = False,
             output_root: Path = OUTPUT_ROOT, out: TextIO | None = None, workers: int = 0) -> dict[str, Any]:
    """Run the search of ``config``; returns the summary printed on ``out``."""
    out = out if out is not None else sys.stdout
    ctx = context(config, "tune", "tune", output_root)
    section, training = config["tune"], config["training"]
    contestants = [parse_contestant(name, "tune.optimizers") for name in section["optimizers"]]
    SeededHyperModel(ctx, contestants, training["seeds"][0])  # a list it cannot search fails here, first
    with PipelineLock(ctx.output, f"tune {ctx.name}"):
        state = Slot(ctx.output, slot)
        if state.finished:
            print(f"slot {slot} of tune {ctx.name} already finished: parent run {state.state.get('parent_run_id')}",
                  file=out)
            return state.state.get("summary", {})
        resume = state.resumed
        state.save("running")
        workspace = ctx.output / (f"slots/{slot}" if slot else "latest")
        say(f"[tune {ctx.name}] {section['tuner']} search, {section['trials']} trials over "
            f"{', '.join(c.label for c in contestants)}; objective {ctx.metric} ({ctx.direction})", quiet)
        try:
            tuner = run_search(ctx, section, contestants, trials=section["trials"], epochs=training["epochs"],
                               directory=workspace, project="search", run_name=f"tune {ctx.name}", resume=resume,
                               seed=training["seeds"][0], workers=workers, quiet=quiet,
                               callbacks=[Progress(f"tune {ctx.name}", training["epochs"], quiet)])
        except BaseException:
            state.save("failed")
            raise
        best = tuner.oracle.get_best_trials(1)
        summary = {
            "parent_run_id": tuner.parent_run_id,
            "experiment": ctx.experiment,
            "tracking_uri": ctx.tracking_uri,
            "metric": ctx.metric,
            "best_score": float(best[0].score) if best and best[0].score is not None else None,
            "best_hyperparameters": {k: v for k, v in best[0].hyperparameters.values.items()
                                     if best[0].hyperparameters.is_active(k)} if best else {},
        }
        state.save("finished", parent_run_id=tuner.parent_run_id, summary=summary)
    print(f"tune {ctx.name}: best {ctx.metric} = {summary['best_score']} with {summary['best_hyperparameters']}",
          file=out)
    print(f"parent run {summary['parent_run_id']} in experiment {ctx.experiment!r} of {ctx.tracking_uri}", file=out)
    return summary
