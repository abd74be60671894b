"""Seconds per trial a tracked search spends outside training: ours vs plain Keras Tuner.

The same ``OptimizerHyperModel`` (an MLP 64 -> 64 -> 10 on scikit-learn's
digits, ``optimizers=["Adam", "RAdam"]``, 2 epochs of 1,437 samples at batch
64) is searched by ``keras_tuner.RandomSearch`` and by
``keras_optsuite.tuning.RandomSearch`` (one embedded SQLite store in a
temporary directory, created by an untimed warm-up search), alternately, ``--rounds`` times each, ``--trials`` trials per
search.

Per search: **wall s** is ``search()`` end to end; **training s** is the
sum over trials of the time from the first epoch's start to the last
epoch's end (a callback listed first sees both); **outside s / trial** is
``(wall - training) / trials``: building and compiling the model, Keras
Tuner's bookkeeping and checkpoints, and for ours the MLflow child run's
creation, params, end-of-run artifacts (``MLflowTracking``: final/best
``.keras``, summary, history, curves), the parent run's per-trial updates and
its end (results table, plots, best logged model, spread over the trials).
Per-epoch logging inside training is in **training s**. Median over rounds.

With ``--memory N`` it instead measures memory across ``N`` trials
(keras-tuner#873), each series in a fresh process of its own (no series
inherits another's allocations): a plain Keras loop doing what one trial
does (``clear_session``, ``gc.collect``, build, compile, fit the same
hypermodel at its defaults), the same loop with each trial inside
``releasing_custom_gradients()`` (what ours does: TensorFlow's gradient
registry otherwise keeps every traced train step) as the floor, then ``N``
trials of each tuner,
all with ``optimizers=["Adam"]`` (what TensorFlow keeps of each trained
model depends on the optimizer's train-step graph, so every series trains
the same one; the tuners search Adam's hyperparameters).
After each trial's training it reads the process's anonymous resident
memory (``RssAnon`` in ``/proc/self/status``; ``VmRSS`` also counts the
shared libraries' pages, which the kernel evicts and reloads under memory
pressure: on a shared machine it fell by 250 MiB in the middle of a plain
loop). It prints each series, the least-squares slope over trials
``--from`` (10) to ``N`` with its standard error, and the residuals' standard
deviation (the measurement's noise).

    .venv/bin/python benchmarks/tuning_overhead.py [--rounds 3] [--trials 6] [--memory 30 [--from 10]]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import keras_optsuite  # noqa: E402,F401
from keras_optsuite import tuning  # noqa: E402

EPOCHS = 2
BATCH = 64


def anonymous_resident_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("RssAnon:"))
    return int(line.split()[1]) / 1024


class Memory(keras.callbacks.Callback):
    """Appends the anonymous resident memory after each trial's training to ``samples``."""

    samples: list[float] = []

    def on_train_end(self, logs=None):
        Memory.samples.append(anonymous_resident_mib())


class TrainingTime(keras.callbacks.Callback):
    """Adds the time from the first epoch's start to the last epoch's end to ``total``."""

    total = [0.0]

    def on_epoch_begin(self, epoch, logs=None):
        if not hasattr(self, "_start"):
            self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self._end = time.perf_counter()

    def on_train_end(self, logs=None):
        TrainingTime.total[0] += self._end - self._start


def _build(hp):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])


def _hypermodel(optimizers: tuple[str, ...] = ("Adam", "RAdam")) -> tuning.OptimizerHyperModel:
    return tuning.OptimizerHyperModel(
        _build, keras.losses.SparseCategoricalCrossentropy(from_logits=True), optimizers=list(optimizers))


def run(kind: str, directory: str, trials: int, data, tracking_uri: str,
        extra: list | None = None, optimizers: tuple[str, ...] = ("Adam", "RAdam")) -> tuple[float, float]:
    (x, y), validation = data
    hypermodel = _hypermodel(optimizers)
    common = dict(objective="val_loss", max_trials=trials, seed=1, directory=directory, project_name=kind,
                  overwrite=True)
    if kind == "keras_tuner":
        tuner = keras_tuner.RandomSearch(hypermodel, **common)
    else:
        tuner = tuning.RandomSearch(hypermodel, experiment="overhead",
                                    tracking_uri=tracking_uri, **common)
    TrainingTime.total[0] = 0.0
    start = time.perf_counter()
    tuner.search(x, y, validation_data=validation, epochs=EPOCHS, batch_size=BATCH, verbose=0,
                 callbacks=[TrainingTime(), *(extra or [])])
    wall = time.perf_counter() - start
    return wall, TrainingTime.total[0]


SERIES = ("keras", "keras_released", "keras_tuner", "keras_optsuite")
# One family in the memory runs: what TensorFlow keeps of each trained model depends on the
# optimizer's train-step graph (RAdam's is larger than Adam's), so every series trains the same one.
MEMORY_OPTIMIZERS = ("Adam",)


def memory_series(kind: str, trials: int, data) -> list[float]:
    """Anonymous resident MiB after each of ``trials`` trials of one series (run in its own process)."""
    Memory.samples = []
    with tempfile.TemporaryDirectory(prefix="tuning-memory-") as directory:
        uri = f"sqlite:///{directory}/mlruns/mlflow.db"
        if kind in ("keras", "keras_released"):
            (x, y), validation = data
            hypermodel, hp = _hypermodel(MEMORY_OPTIMIZERS), keras_tuner.HyperParameters()
            for trial in range(trials):
                keras.backend.clear_session()  # what Keras Tuner does before each trial's build
                gc.collect()
                with tuning.releasing_custom_gradients() if kind == "keras_released" else contextlib.nullcontext():
                    model = hypermodel.build(hp)
                    hypermodel.fit(hp, model, x, y, validation_data=validation, epochs=EPOCHS,
                                   batch_size=BATCH, verbose=0, callbacks=[Memory()])
                del model
                print(f"{kind}: trial {trial + 1}/{trials}", file=sys.stderr, flush=True)
        else:
            run("keras_optsuite", os.path.join(directory, "warmup"), 2, data, uri)  # the store's schema
            run(kind, os.path.join(directory, kind), trials, data, uri, [Memory(), _Progress(kind, trials)],
                MEMORY_OPTIMIZERS)
    return Memory.samples


class _Progress(keras.callbacks.Callback):
    done = [0]

    def __init__(self, kind: str, trials: int) -> None:
        super().__init__()
        self.kind, self.trials = kind, trials

    def on_train_end(self, logs=None):
        _Progress.done[0] += 1
        print(f"{self.kind}: trial {_Progress.done[0]}/{self.trials}", file=sys.stderr, flush=True)


def slope(samples: list[float], start: int) -> tuple[float, float, float]:
    """Least-squares MiB per trial over trials ``start``..end (1-based), its standard error, residual std."""
    trials = np.arange(start, len(samples) + 1, dtype=float)
    values = np.asarray(samples[start - 1:], dtype=float)
    per_trial, intercept = np.polyfit(trials, values, 1)
    residuals = values - (per_trial * trials + intercept)
    noise = float(np.sqrt(np.sum(residuals ** 2) / max(len(trials) - 2, 1)))
    error = noise / float(np.sqrt(np.sum((trials - trials.mean()) ** 2)))
    return float(per_trial), error, noise


def memory_report(trials: int, start: int) -> None:
    if not 1 <= start < trials - 1:
        raise SystemExit(f"--from must be between 1 and {trials - 2} for {trials} trials, got {start}")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, keras-tuner {keras_tuner.__version__}, "
          f"MLflow {mlflow.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"{trials} trials x {EPOCHS} epochs, each series in its own process; RssAnon after each trial")
    rows = []
    for kind in SERIES:
        output = subprocess.run([sys.executable, __file__, "--memory", str(trials), "--memory-series", kind],
                                check=True, stdout=subprocess.PIPE, text=True).stdout
        samples = json.loads(output.strip().splitlines()[-1])
        print(f"{kind}: MiB after each trial: {' '.join(f'{m:.0f}' for m in samples)}", flush=True)
        rows.append((kind, samples, *slope(samples, start)))
    print(f"| series | MiB after trial {start} | after trial {trials} | MiB / trial, trials {start}-{trials} "
          "(± standard error) | noise (residual std, MiB) |")
    print("|---|---:|---:|---:|---:|")
    names = {"keras": "plain Keras loop", "keras_released": "plain Keras loop, custom gradients released (floor)",
             "keras_tuner": "keras_tuner.RandomSearch",
             "keras_optsuite": "keras_optsuite.tuning.RandomSearch"}
    for kind, samples, per_trial, error, noise in rows:
        print(f"| {names[kind]} | {samples[start - 1]:.0f} | {samples[-1]:.0f} | {per_trial:.2f} ± {error:.2f} "
              f"| {noise:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--memory", type=int, default=0, help="trials of the memory run (0: time instead)")
    parser.add_argument("--from", dest="start", type=int, default=10,
                        help="first trial (1-based) of the memory slope")
    parser.add_argument("--memory-series", choices=SERIES, help=argparse.SUPPRESS)  # one series, in a child
    arguments = parser.parse_args()
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    data = ((x[:1437], y[:1437]), (x[1437:], y[1437:]))
    if arguments.memory_series:
        print(json.dumps(memory_series(arguments.memory_series, arguments.memory, data)))
        return
    if arguments.memory:
        memory_report(arguments.memory, arguments.start)
        return
    results: dict[str, list[tuple[float, float]]] = {"keras_tuner": [], "keras_optsuite": []}
    with tempfile.TemporaryDirectory(prefix="tuning-overhead-") as directory:
        # One store for every search, as a user has: creating its schema (5 s on SQLite) is untimed.
        uri = f"sqlite:///{directory}/mlruns/mlflow.db"
        run("keras_optsuite", os.path.join(directory, "warmup"), 2, data, uri)
        for round_ in range(arguments.rounds):
            for kind in results:
                results[kind].append(run(kind, os.path.join(directory, f"{kind}-{round_}"), arguments.trials,
                                         data, uri))
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, keras-tuner {keras_tuner.__version__}, "
          f"MLflow {mlflow.__version__}, Python {platform.python_version()}, {os.cpu_count()} CPUs; "
          f"{arguments.trials} trials x {EPOCHS} epochs, median of {arguments.rounds}")
    print("| tuner | wall s | training s | outside s / trial |")
    print("|---|---:|---:|---:|")
    for kind, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        training = statistics.median(t for _, t in rows)
        outside = statistics.median((w - t) / arguments.trials for w, t in rows)
        name = "keras_tuner.RandomSearch" if kind == "keras_tuner" else "keras_optsuite.tuning.RandomSearch"
        print(f"| {name} | {wall:.2f} | {training:.2f} | {outside:.2f} |")


if __name__ == "__main__":
    main()
