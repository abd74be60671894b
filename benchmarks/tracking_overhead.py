"""Cost of tracking a Keras ``fit`` in MLflow, split into a per-epoch and a fixed cost.

An MLP (64 -> 256 -> 256 -> 10, Adam) trains on scikit-learn's digits
(1,797 8x8 images, shipped with scikit-learn: no download) with batch 32 and
``validation_split=0.2`` (45 steps per epoch, validation at every epoch end)
three ways:

- ``no callback``: plain ``fit``;
- ``mlflow.keras.MlflowCallback``: MLflow's callback with
  ``log_every_epoch=False, log_every_n_steps=10`` inside ``mlflow.start_run()``
  (it needs an active run; it logs asynchronously, and ``end_run`` flushes);
- ``MLflowTracking``: ours, ``log_every_n_steps=10``; it creates its run in
  ``on_train_begin`` and, in ``on_train_end``, saves and uploads the final
  and best ``.keras`` models, the summary, history and plots, logs the two
  MLflow logged models, then flushes (bounded).

Each variant trains twice per round, a short fit (``--short`` epochs,
default 5: 225 steps) and a long one (``--long``, default 45: 2,025 steps),
each time from the same initial weights. Every time is taken from the
start of the run (``start_run`` for MLflow's callback; ours creates it
inside ``fit``) to the run ended and flushed (``end_run``; ours'
``on_train_end``), so with ``T(E)`` the time of an ``E``-epoch fit:

- **per epoch** = ``(T(long) - T(short)) / (long - short)``: what every
  epoch costs, per-step logging, epoch records and best-model bookkeeping
  included; the ratio is to ``no callback``'s;
- **fixed** = ``T(short) - short x per epoch``: what a run costs whatever
  its length (run start and end, artifacts, logged models), shown as the
  extra over ``no callback``'s fixed time. Not the tracing of the train
  functions: every model is traced in the untimed warm-up round.

Both are computed per round and the median over rounds is reported, with
wall time (what a user waits) and the process's CPU time (all its threads;
steadier on a loaded machine, but blind to waiting: MLflow's ``end_run``
sleeps on its logging thread, and a server's work is in another process).
Variants run interleaved round-robin in one process, after an untimed
warm-up round per store that also traces ``fit`` and creates the database
schema.

Two stores: the embedded SQLite store (``sqlite:///<tmp>/mlruns/mlflow.db``)
and a local ``mlflow server`` with a SQLite backend on 127.0.0.1, which the
benchmark starts (``tests/mlflow_server.py``) and always stops. Everything is
written under a temporary directory that is removed at the end.

    .venv/bin/python benchmarks/tracking_overhead.py [--repeats 5] [--short 5] [--long 45]
        [--store embedded|server|both] [--first-fit]

``--first-fit`` also measures what tracing costs the first ``fit`` of a
model (``MLflowTracking`` traces a second train function, the one its
logging steps run): for fresh models, untracked and tracked on the embedded
store, the CPU time of a first one-epoch fit minus that of a second one,
median of ``--repeats`` models each.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"  # MLflow 3 phones home by default

import keras  # noqa: E402
import mlflow  # noqa: E402
import mlflow.keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_optsuite.callbacks import MLflowTracking  # noqa: E402
from keras_optsuite.callbacks._store import default_tracking_uri, get_or_create_experiment  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from mlflow_server import MlflowServer  # noqa: E402

LOG_EVERY_N_STEPS = 10
BATCH_SIZE = 32
VALIDATION_SPLIT = 0.2
HIDDEN_UNITS = (256, 256)
VARIANTS = ("no callback", "mlflow.keras.MlflowCallback", "MLflowTracking (ours)")
EXPERIMENT = "tracking-overhead"
CLOCKS = ("wall", "cpu")


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _now() -> dict[str, float]:
    return {"wall": time.perf_counter(), "cpu": time.process_time()}


def _data() -> tuple[np.ndarray, np.ndarray]:
    digits = load_digits()
    return (digits.data / 16.0).astype("float32"), digits.target.astype("int32")


def _model(features: int) -> keras.Model:
    layers = [keras.Input((features,))]
    layers += [keras.layers.Dense(units, activation="relu") for units in HIDDEN_UNITS]
    layers.append(keras.layers.Dense(10))
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


class _Bench:
    """One model and data set; times one ``fit`` of a variant against one store."""

    def __init__(self, root: Path) -> None:
        self.x, self.y = _data()
        self.root = root
        # One model per variant: ours adds the gradient-norm probe to its model's train step, which
        # must not reach the untracked fit. Same initial weights and optimizer state for all.
        self.models = {variant: _model(self.x.shape[1]) for variant in VARIANTS}
        self.initial_weights = self.models[VARIANTS[0]].get_weights()
        for model in self.models.values():
            model.optimizer.build(model.trainable_variables)
        self.initial_optimizer = [v.numpy() for v in self.models[VARIANTS[0]].optimizer.variables]
        self.last: dict[str, tuple[str, int]] = {}  # variant -> (run id, epochs) of its last tracked fit

    def steps_per_epoch(self) -> int:
        return int(np.ceil(int(len(self.x) * (1 - VALIDATION_SPLIT)) / BATCH_SIZE))

    def _fit(self, variant: str, epochs: int, callbacks: list) -> None:
        self.models[variant].fit(self.x, self.y, batch_size=BATCH_SIZE, epochs=epochs,
                       validation_split=VALIDATION_SPLIT, verbose=0, callbacks=callbacks)

    def run(self, variant: str, uri: str, experiment_id: str, epochs: int) -> dict[str, float]:
        """Seconds of one ``epochs``-epoch fit from the run's start to its end, per clock."""
        model = self.models[variant]
        model.set_weights(self.initial_weights)  # same work every time: weights and optimizer state
        for variable, value in zip(model.optimizer.variables, self.initial_optimizer):
            variable.assign(value)
        if variant == VARIANTS[0]:
            start = _now()
            self._fit(variant, epochs, [])
        elif variant == VARIANTS[1]:
            mlflow.set_tracking_uri(uri)
            start = _now()
            with mlflow.start_run(experiment_id=experiment_id) as run:
                theirs = mlflow.keras.MlflowCallback(log_every_epoch=False, log_every_n_steps=LOG_EVERY_N_STEPS)
                self._fit(variant, epochs, [theirs])
            self.last[variant] = (run.info.run_id, epochs)
        else:
            start = _now()
            with MLflowTracking(experiment=EXPERIMENT, tracking_uri=uri, log_every_n_steps=LOG_EVERY_N_STEPS,
                                journal_path=self.root / "journal.jsonl") as ours:
                self._fit(variant, epochs, [ours])
            self.last[variant] = (ours.run_id, epochs)
        end = _now()
        return {clock: end[clock] - start[clock] for clock in CLOCKS}


def _check_logged(uri: str, bench: _Bench) -> None:
    """Both tracked variants really logged every 10 steps and ended FINISHED (sanity, untimed)."""
    client = mlflow.MlflowClient(uri)
    for variant, metric in ((VARIANTS[1], "loss"), (VARIANTS[2], "batch.loss")):
        run_id, epochs = bench.last[variant]
        expected = epochs * bench.steps_per_epoch() // LOG_EVERY_N_STEPS
        run = client.get_run(run_id)
        points = len(client.get_metric_history(run_id, metric))
        _progress(f"  check {variant}: status {run.info.status}, {points} '{metric}' points "
                  f"(expected at least {expected})")
        if run.info.status != "FINISHED" or points < expected:
            raise RuntimeError(f"{variant} did not log as expected on {uri}: {run.info.status}, {points} points")


Times = dict[str, list[dict[str, float]]]  # variant -> one {"per_epoch_<clock>", "fixed_<clock>"} per round


def _measure(store: str, uri: str, bench: _Bench, repeats: int, short: int, long: int) -> Times:
    experiment_id = get_or_create_experiment(mlflow.MlflowClient(uri), EXPERIMENT)
    _progress(f"[{store}] warm-up round ({uri})")
    for variant in VARIANTS:
        seconds = bench.run(variant, uri, experiment_id, short)
        _progress(f"  warm-up {variant}: {seconds['wall']:.2f} s")
    _check_logged(uri, bench)
    times: Times = {variant: [] for variant in VARIANTS}
    for repeat in range(repeats):  # interleaved: drift in machine load hits every variant alike
        for variant in VARIANTS:
            short_seconds = bench.run(variant, uri, experiment_id, short)
            long_seconds = bench.run(variant, uri, experiment_id, long)
            estimate = {}
            for clock in CLOCKS:
                per_epoch = (long_seconds[clock] - short_seconds[clock]) / (long - short)
                estimate[f"per_epoch_{clock}"] = per_epoch
                estimate[f"fixed_{clock}"] = short_seconds[clock] - short * per_epoch
            times[variant].append(estimate)
            _progress(f"[{store}] repeat {repeat + 1}/{repeats} {variant}: {short} epochs "
                      f"{short_seconds['wall']:.2f} s wall / {short_seconds['cpu']:.2f} s CPU, {long} epochs "
                      f"{long_seconds['wall']:.2f} / {long_seconds['cpu']:.2f} s")
    _check_logged(uri, bench)  # the long fits logged too
    return times


def _rows(store: str, times: Times) -> list[str]:
    def median(variant: str, key: str) -> float:
        return statistics.median(estimate[key] for estimate in times[variant])

    base = {key: median(VARIANTS[0], key) for key in times[VARIANTS[0]][0]}
    rows = []
    for variant in VARIANTS:
        cells = [store, variant]
        for clock in CLOCKS:
            per_epoch = median(variant, f"per_epoch_{clock}")
            cells += [f"{per_epoch * 1000:.1f}", f"{per_epoch / base[f'per_epoch_{clock}']:.3f}x"]
        for clock in CLOCKS:
            extra = median(variant, f"fixed_{clock}") - base[f"fixed_{clock}"]
            cells.append(f"{extra:+.2f}")
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _first_fit_trace(root: Path, repeats: int) -> dict[str, float]:
    """CPU seconds a model's first one-epoch fit takes over its second, per variant (median of fresh models)."""
    x, y = _data()
    uri = default_tracking_uri(root / "first-fit")
    get_or_create_experiment(mlflow.MlflowClient(uri), EXPERIMENT)  # the schema, before any timing
    extra: dict[str, list[float]] = {VARIANTS[0]: [], VARIANTS[2]: []}
    for _ in range(repeats):
        for variant in extra:
            model = _model(x.shape[1])
            seconds = []
            for _ in range(2):
                callbacks = [] if variant == VARIANTS[0] else [
                    MLflowTracking(experiment=EXPERIMENT, tracking_uri=uri, log_every_n_steps=LOG_EVERY_N_STEPS,
                                   journal_path=root / "journal.jsonl", log_model=False)]
                start = time.process_time()
                model.fit(x, y, batch_size=BATCH_SIZE, epochs=1, validation_split=VALIDATION_SPLIT, verbose=0,
                          callbacks=callbacks)
                seconds.append(time.process_time() - start)
            extra[variant].append(seconds[0] - seconds[1])
            _progress(f"[first fit] {variant}: first {seconds[0]:.2f} s CPU, second {seconds[1]:.2f} s")
    return {variant: statistics.median(values) for variant, values in extra.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--short", type=int, default=5, help="epochs of the short fit (45 steps each)")
    parser.add_argument("--long", type=int, default=45, help="epochs of the long fit (45 steps each)")
    parser.add_argument("--store", choices=("embedded", "server", "both"), default="both")
    parser.add_argument("--first-fit", action="store_true",
                        help="also measure the tracing cost of a model's first fit, untracked and tracked")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.short < 1 or args.long <= args.short:
        parser.error(f"need --repeats >= 1 and 1 <= --short < --long, got repeats={args.repeats}, "
                     f"short={args.short}, long={args.long}")
    keras.utils.set_random_seed(0)
    rows: list[str] = []
    # MLflow prints "View run ... at: <url>" to stdout when a run on a server ends: keep stdout for the table.
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="tracking-overhead-") as directory:
        root = Path(directory)
        bench = _Bench(root)
        if args.store in ("embedded", "both"):
            uri = default_tracking_uri(root / "mlruns")
            rows += _rows("embedded SQLite", _measure("embedded", uri, bench, args.repeats, args.short, args.long))
        if args.store in ("server", "both"):
            server = MlflowServer(root / "server")
            try:
                server.start()
                _progress(f"[server] mlflow server up in {server.last_start_seconds:.1f} s at {server.uri}")
                rows += _rows("local server",
                              _measure("server", server.uri, bench, args.repeats, args.short, args.long))
            finally:
                server.stop()
        first_fit = _first_fit_trace(root, args.repeats) if args.first_fit else None
    steps = bench.steps_per_epoch()
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, MLflow {mlflow.__version__}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs; MLP {HIDDEN_UNITS} on digits, "
          f"batch {BATCH_SIZE}, {steps} steps per epoch, fits of {args.short} and {args.long} epochs "
          f"({args.short * steps} and {args.long * steps} steps), logging every {LOG_EVERY_N_STEPS} steps; "
          f"median of {args.repeats} interleaved rounds; load average {os.getloadavg()[0]:.1f} at the end")
    print("| store | variant | ms / epoch (wall) | ratio | ms / epoch (CPU) | ratio | "
          "fixed s over no callback (wall) | (CPU) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    if first_fit is not None:
        print(f"First fit of a model, CPU s over its second fit (tracing), median of {args.repeats} models: "
              + ", ".join(f"{variant} {seconds:.2f}" for variant, seconds in first_fit.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
