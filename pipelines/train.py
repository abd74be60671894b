"""``optsuite train CONFIG``: one tracked training run of ``[training] optimizer``.

The model and data of the config, the optimizer at its documented defaults
(``[training] learning_rate`` overrides the learning rate), trained on the
training split and validated on the validation split (the held-out test
split is left to ``compare`` and ``promote``), tracked by
:class:`~keras_optsuite.callbacks.MLflowTracking` in one run of the
config's experiment. With ``--slot`` a crashed run resumes from its last
epoch, in the same MLflow run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, TextIO

from keras_optsuite.pipelines._common import OUTPUT_ROOT, context, parse_contestant
from keras_optsuite.pipelines._unattended import PipelineLock, Progress, Slot, say
from keras_optsuite.pipelines.tune import SeededHyperModel
from keras_optsuite.schedules import set_learning_rate


def run_train(config: Mapping[str, Any], *, slot: str | None = None, quiet: bool = False,
              output_root: Path = OUTPUT_ROOT, out: TextIO | None = None) -> dict[str, Any]:
    """Train once as ``config`` says; returns the summary printed on ``out``."""
    out = out if out is not None else sys.stdout
    import keras
    import keras_tuner

    from keras_optsuite.callbacks import MLflowTracking

    ctx = context(config, "train", output_root=output_root)
    training = config["training"]
    contestant = parse_contestant(training["optimizer"], "training.optimizer")
    seed = int(training["seeds"][0])
    with PipelineLock(ctx.output, f"train {ctx.name}"):
        state = Slot(ctx.output, slot)
        if state.finished:
            print(f"slot {slot} of train {ctx.name} already finished: run {state.state.get('run_id')}", file=out)
            return state.state.get("summary", {})
        state.save("running")
        model = SeededHyperModel(ctx, [contestant], seed)
        hp = keras_tuner.HyperParameters()
        with ctx.strategy().scope():
            network = model.build(hp)  # the family's documented defaults
            if training["learning_rate"] is not None:
                set_learning_rate(network.optimizer, float(training["learning_rate"]))
        backup = state.directory / "backup" if state.directory else None
        tracking = MLflowTracking(experiment=ctx.experiment, tracking_uri=ctx.tracking_uri, seed=seed,
                                  run_name=f"train {contestant.label}", training_data=ctx.data.x_train[:2],
                                  tags={"keras_optsuite.kind": "train", "keras_optsuite.config": ctx.name},
                                  backup_dir=backup)
        callbacks = [tracking, Progress(f"train {contestant.label}", training["epochs"], quiet)]
        if backup is not None:
            callbacks.insert(callbacks.index(tracking) + 1, keras.callbacks.BackupAndRestore(str(backup)))
        say(f"[train {ctx.name}] {contestant.label} on {ctx.data.name} {ctx.data.sizes()}, "
            f"{training['epochs']} epochs", quiet)
        try:
            with tracking:
                history = model.fit(hp, network, ctx.data.x_train, ctx.data.y_train,
                                    validation_data=(ctx.data.x_val, ctx.data.y_val), epochs=training["epochs"],
                                    batch_size=training["batch_size"], verbose=0, callbacks=callbacks)
        except BaseException:
            state.save("failed", run_id=tracking.run_id)
            raise
        final = {key: float(values[-1]) for key, values in history.history.items()}
        summary = {"run_id": tracking.run_id, "experiment": ctx.experiment, "tracking_uri": ctx.tracking_uri,
                   "optimizer": contestant.label, "final": final}
        state.save("finished", run_id=tracking.run_id, summary=summary)
    shown = ", ".join(f"{key} {value:.4g}" for key, value in final.items())
    print(f"train {ctx.name}: {contestant.label}, {shown}", file=out)
    print(f"run {tracking.run_id} in experiment {ctx.experiment!r} of {ctx.tracking_uri}", file=out)
    return summary
