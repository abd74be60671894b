"""Cost of tracking a Keras ``fit`` in MLflow: no callback vs MLflow's ``MlflowCallback`` vs ``MLflowTracking``.

An MLP (64 -> 256 -> 256 -> 10, Adam) trains on scikit-learn's digits
(1,797 8x8 images, shipped with scikit-learn: no download) with batch 32 and
``validation_split=0.2`` (45 steps per epoch) for a fixed number of epochs,
three ways:

- ``no callback``: plain ``fit``;
- ``mlflow.keras.MlflowCallback``: MLflow's callback with
  ``log_every_epoch=False, log_every_n_steps=10`` inside ``mlflow.start_run()``
  (it needs an active run; it logs asynchronously, and ``end_run`` flushes);
- ``MLflowTracking``: ours, ``log_every_n_steps=10``; it creates its run in
  ``on_train_begin`` and, in ``on_train_end``, saves and uploads the final
  and best ``.keras`` models, the summary, history and plots, then flushes
  (bounded).

Two stores: the embedded SQLite store (``sqlite:///<tmp>/mlruns/mlflow.db``)
and a local ``mlflow server`` with a SQLite backend on 127.0.0.1, which the
benchmark starts (``tests/mlflow_server.py``) and always stops. Everything is
written under a temporary directory that is removed at the end.

Columns, per variant, median over repeats (variants interleaved round-robin in
one process, after an untimed warm-up round of every variant per store that
also traces ``fit`` and creates the database schema):

- **fit s**: from creating the run (``start_run`` before ``fit`` for
  MLflow's callback; ours creates it inside ``fit``) to the moment Keras
  starts ``on_train_end``: what training pays, per-step logging included.
- **fit + run end s**: the same start to the run ended and flushed
  (``end_run`` for MLflow's callback; ours' ``on_train_end``, where it
  uploads its artifacts).

Ratios are to ``no callback`` on the same store.

    .venv/bin/python benchmarks/tracking_overhead.py [--repeats 5] [--epochs 5] [--store embedded|server|both]
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
HIDDEN_UNITS = (256, 256)
VARIANTS = ("no callback", "mlflow.keras.MlflowCallback", "MLflowTracking (ours)")
EXPERIMENT = "tracking-overhead"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class _Clock(keras.callbacks.Callback):
    """Records when Keras starts ``on_train_end``; placed first, so before any tracking callback's."""

    def __init__(self) -> None:
        super().__init__()
        self.train_end: float | None = None

    def on_train_end(self, logs=None) -> None:
        self.train_end = time.perf_counter()


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

    def __init__(self, epochs: int, root: Path) -> None:
        self.x, self.y = _data()
        self.epochs = epochs
        self.root = root
        self.model = _model(self.x.shape[1])
        self.initial_weights = self.model.get_weights()
        self.run_ids: dict[str, list[str]] = {}

    def _fit(self, callbacks: list) -> None:
        self.model.fit(self.x, self.y, batch_size=BATCH_SIZE, epochs=self.epochs,
                       validation_split=0.2, verbose=0, callbacks=callbacks)

    def run(self, variant: str, uri: str, experiment_id: str) -> tuple[float, float]:
        """(fit seconds, fit + run end seconds) of one ``fit``."""
        self.model.set_weights(self.initial_weights)  # same work every time
        clock = _Clock()
        if variant == VARIANTS[0]:
            start = time.perf_counter()
            self._fit([clock])
        elif variant == VARIANTS[1]:
            mlflow.set_tracking_uri(uri)
            start = time.perf_counter()
            with mlflow.start_run(experiment_id=experiment_id) as run:
                theirs = mlflow.keras.MlflowCallback(log_every_epoch=False, log_every_n_steps=LOG_EVERY_N_STEPS)
                self._fit([clock, theirs])
            self.run_ids.setdefault(f"{uri} {variant}", []).append(run.info.run_id)
        else:
            start = time.perf_counter()
            with MLflowTracking(experiment=EXPERIMENT, tracking_uri=uri, log_every_n_steps=LOG_EVERY_N_STEPS,
                                journal_path=self.root / "journal.jsonl") as ours:
                self._fit([clock, ours])
            self.run_ids.setdefault(f"{uri} {variant}", []).append(ours.run_id)
        done = time.perf_counter()
        return clock.train_end - start, done - start


def _check_logged(uri: str, bench: _Bench) -> None:
    """Both tracked variants really logged every 10 steps and ended FINISHED (sanity, untimed)."""
    client = mlflow.MlflowClient(uri)
    steps_per_run = bench.epochs * int(np.ceil(len(bench.x) * 0.8 / BATCH_SIZE))
    expected = steps_per_run // LOG_EVERY_N_STEPS
    for variant, metric in ((VARIANTS[1], "loss"), (VARIANTS[2], "batch.loss")):
        run_id = bench.run_ids[f"{uri} {variant}"][-1]
        run = client.get_run(run_id)
        points = len(client.get_metric_history(run_id, metric))
        _progress(f"  check {variant}: status {run.info.status}, {points} '{metric}' points "
                  f"(expected at least {expected})")
        if run.info.status != "FINISHED" or points < expected:
            raise RuntimeError(f"{variant} did not log as expected on {uri}: {run.info.status}, {points} points")


def _measure(store: str, uri: str, bench: _Bench, repeats: int) -> dict[str, tuple[list[float], list[float]]]:
    experiment_id = get_or_create_experiment(mlflow.MlflowClient(uri), EXPERIMENT)
    _progress(f"[{store}] warm-up round ({uri})")
    for variant in VARIANTS:
        fit_seconds, total_seconds = bench.run(variant, uri, experiment_id)
        _progress(f"  warm-up {variant}: fit {fit_seconds:.2f} s, fit + run end {total_seconds:.2f} s")
    _check_logged(uri, bench)
    times: dict[str, tuple[list[float], list[float]]] = {variant: ([], []) for variant in VARIANTS}
    for repeat in range(repeats):  # interleaved: drift in machine load hits every variant alike
        for variant in VARIANTS:
            fit_seconds, total_seconds = bench.run(variant, uri, experiment_id)
            times[variant][0].append(fit_seconds)
            times[variant][1].append(total_seconds)
            _progress(f"[{store}] repeat {repeat + 1}/{repeats} {variant}: fit {fit_seconds:.2f} s, "
                      f"fit + run end {total_seconds:.2f} s")
    return times


def _rows(store: str, times: dict[str, tuple[list[float], list[float]]]) -> list[str]:
    base_fit, base_total = (statistics.median(values) for values in times[VARIANTS[0]])
    rows = []
    for variant in VARIANTS:
        fit_seconds, total_seconds = (statistics.median(values) for values in times[variant])
        rows.append(f"| {store} | {variant} | {fit_seconds:.2f} | {fit_seconds / base_fit:.2f}x | "
                    f"{total_seconds:.2f} | {total_seconds / base_total:.2f}x |")
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--store", choices=("embedded", "server", "both"), default="both")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.epochs < 1:
        parser.error(f"--repeats and --epochs must be >= 1, got repeats={args.repeats}, epochs={args.epochs}")
    keras.utils.set_random_seed(0)
    rows: list[str] = []
    # MLflow prints "View run ... at: <url>" to stdout when a run on a server ends: keep stdout for the table.
    with contextlib.redirect_stdout(sys.stderr), tempfile.TemporaryDirectory(prefix="tracking-overhead-") as directory:
        root = Path(directory)
        bench = _Bench(args.epochs, root)
        if args.store in ("embedded", "both"):
            uri = default_tracking_uri(root / "mlruns")
            rows += _rows("embedded SQLite", _measure("embedded", uri, bench, args.repeats))
        if args.store in ("server", "both"):
            server = MlflowServer(root / "server")
            try:
                server.start()
                _progress(f"[server] mlflow server up in {server.last_start_seconds:.1f} s at {server.uri}")
                rows += _rows("local server", _measure("server", server.uri, bench, args.repeats))
            finally:
                server.stop()
    steps = args.epochs * int(np.ceil(len(bench.x) * 0.8 / BATCH_SIZE))
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, MLflow {mlflow.__version__}, "
          f"Python {platform.python_version()}, {os.cpu_count()} CPUs; MLP {HIDDEN_UNITS} on digits, "
          f"batch {BATCH_SIZE}, {args.epochs} epochs ({steps} steps), logging every {LOG_EVERY_N_STEPS} steps; "
          f"median of {args.repeats} interleaved repeats")
    print("| store | variant | fit s | ratio | fit + run end s | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
