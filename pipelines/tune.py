"""``optsuite tune CONFIG``: one tracked Keras Tuner search over ``[tune] optimizers``.

The search is :mod:`keras_optsuite.tuning`'s (one MLflow parent run, a
child run per trial, pruning, failures kept); this module builds it from a
config, and :func:`make_tuner` is shared with the bake-off, which runs one
search per optimizer.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, TextIO

import keras

from keras_optsuite.pipelines._common import OUTPUT_ROOT, Contestant, Context, context, parse_contestant
from keras_optsuite.pipelines._unattended import PipelineLock, Progress, Slot, say
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
    kind = section["tuner"]
    if kind == "hyperband":
        return tuning.Hyperband(model, max_epochs=epochs, **common)
    tuner_class = {"random": tuning.RandomSearch, "bayesian": tuning.BayesianOptimization,
                   "grid": tuning.GridSearch}[kind]
    return tuner_class(model, max_trials=trials, pruning=pruning, **common)


def run_tune(config: Mapping[str, Any], *, slot: str | None = None, quiet: bool = False,
             output_root: Path = OUTPUT_ROOT, out: TextIO | None = None) -> dict[str, Any]:
    """Run the search of ``config``; returns the summary printed on ``out``."""
    out = out if out is not None else sys.stdout
    ctx = context(config, "tune", "tune")
    section, training = config["tune"], config["training"]
    contestants = [parse_contestant(name, "tune.optimizers") for name in section["optimizers"]]
    model = SeededHyperModel(ctx, contestants, training["seeds"][0])
    with PipelineLock(ctx.output, f"tune {ctx.name}"):
        state = Slot(ctx.output, slot)
        if state.finished:
            print(f"slot {slot} of tune {ctx.name} already finished: parent run {state.state.get('parent_run_id')}",
                  file=out)
            return state.state.get("summary", {})
        resume = state.resumed
        state.save("running")
        workspace = ctx.output / (f"slots/{slot}" if slot else "latest")
        tuner = make_tuner(ctx, section, model, trials=section["trials"], epochs=training["epochs"],
                           directory=workspace, project="search", run_name=f"tune {ctx.name}",
                           overwrite=not resume, seed=training["seeds"][0])
        say(f"[tune {ctx.name}] {section['tuner']} search, {section['trials']} trials over "
            f"{', '.join(c.label for c in contestants)}; objective {ctx.metric} ({ctx.direction})", quiet)
        try:
            tuner.search(ctx.data.x_train, ctx.data.y_train, validation_data=(ctx.data.x_val, ctx.data.y_val),
                         epochs=training["epochs"], batch_size=training["batch_size"], verbose=0,
                         callbacks=[Progress(f"tune {ctx.name}", training["epochs"], quiet)])
        except BaseException:
            state.save("failed", parent_run_id=tuner.parent_run_id)
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
