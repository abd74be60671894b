"""Cost of a whole training step with each optimizer, as a ratio to ``keras.optimizers.Adam``.

Unlike ``step_time.py`` (the optimizer's update alone, on fixed gradients),
this times what a user pays per ``fit`` step: forward, backward, and the
optimizer, including the extra forward/backward passes of methods that
evaluate the loss again (SAM-style closures) and the preconditioner work
of second-order methods. The model is an MLP with ~1.07M parameters
(784-1024-256-10) on a fixed synthetic batch of 128. Every optimizer's
compiled train function is built first; then, round after round, each one
runs ``--steps`` steps (the runs interleaved, so drift in machine speed
hits all alike) and the median per-step time over the rounds is reported
with its ratio to Adam measured in the same process.

    .venv/bin/python benchmarks/step_cost.py [--steps 20] [--rounds 5] [--jit] [--cpu-time] [--only Shampoo SAM]

``--sweep`` times Shampoo and SOAP instead, each with its defaults and with
one argument changed at a time (``block_size``, ``precondition_frequency``,
``statistics_compute_steps``, Shampoo's ``root_method``) and with refreshes
and statistics both amortized (every 100 and 10 steps); use ``--steps``
a multiple of the largest frequency (100) so each run holds whole refresh
periods. ``--cpu-time`` times the process's CPU time instead of wall time
(less sensitive to other processes on a shared machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_optsuite.optimizers import REGISTRY, SOAP, WRAPPERS, Shampoo  # noqa: E402

LAYERS = (784, 1024, 256, 10)
BATCH = 128


def candidates(only: list[str] | None) -> dict:
    """``{name: optimizer factory}``: Keras baselines, every registered optimizer and wrapper."""
    found = {
        "keras.Adam": keras.optimizers.Adam,
        "keras.SGD(momentum)": lambda: keras.optimizers.SGD(momentum=0.9),
    }
    found.update({spec.name: spec.cls for spec in REGISTRY.values()})
    for spec in WRAPPERS.values():
        found[f"{spec.name}(keras.Adam)"] = lambda spec=spec: spec.wrap(keras.optimizers.Adam())
    if only:
        found = {name: make for name, make in found.items()
                 if name == "keras.Adam" or any(word in name for word in only)}
    return found


# Changes from the defaults (--sweep): one argument at a time, then refreshes and statistics
# both amortized.
SWEEP = (
    [{"block_size": b} for b in (32, 64, 256)]
    + [{"precondition_frequency": f} for f in (1, 100)]
    + [{"statistics_compute_steps": 10}, {"precondition_frequency": 100, "statistics_compute_steps": 10}]
)


def sweep_candidates() -> dict:
    """``{name: optimizer factory}``: Adam, Shampoo and SOAP at their defaults and with :data:`SWEEP`'s changes."""
    found: dict = {"keras.Adam": keras.optimizers.Adam}
    settings = [(cls, changed) for cls in (Shampoo, SOAP) for changed in [{}, *SWEEP]]
    settings += [(Shampoo, {"root_method": "newton"})]
    for cls, changed in settings:
        label = ", ".join(f"{k}={v!r}" for k, v in changed.items()) or "defaults"
        found[f"{cls.__name__}({label})"] = lambda cls=cls, changed=changed: cls(**changed)
    return found


def build(make_optimizer, jit: bool) -> tuple[keras.Model, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((LAYERS[0],))]
        + [keras.layers.Dense(units, activation="relu") for units in LAYERS[1:-1]]
        + [keras.layers.Dense(LAYERS[-1])]
    )
    model.compile(
        optimizer=make_optimizer(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, LAYERS[0])).astype("float32")
    y = rng.integers(0, LAYERS[-1], size=BATCH).astype("int32")
    model.train_on_batch(x, y)  # trace, build the optimizer, warm up
    return model, x, y


def run(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int, clock=time.perf_counter) -> float:
    """Seconds per step (of ``clock``) over ``steps`` consecutive steps."""
    start = clock()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (clock() - start) / steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--only", nargs="*", default=None, help="names (substrings) to measure besides Adam")
    parser.add_argument("--sweep", action="store_true",
                        help="Shampoo and SOAP against block size, refresh and statistics frequency")
    parser.add_argument("--cpu-time", action="store_true", help="time the process's CPU time, not wall time")
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else time.perf_counter

    models = {}
    for name, make in (sweep_candidates() if args.sweep else candidates(args.only)).items():
        try:
            models[name] = build(make, args.jit)
        except Exception as error:  # noqa: BLE001 - report and measure the others
            print(f"  {name}: cannot train ({type(error).__name__}: {error})", file=sys.stderr)
            continue
        print(f"  built {name}", file=sys.stderr, flush=True)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for round_index in range(args.rounds):
        for name, (model, x, y) in models.items():
            samples[name].append(run(model, x, y, args.steps, clock))
        print(f"  round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    adam = medians["keras.Adam"]
    parameters = models["keras.Adam"][0].count_params()
    print(
        f"MLP {'-'.join(map(str, LAYERS))} ({parameters / 1e6:.2f}M parameters), batch {BATCH}, "
        f"{args.steps} steps x {args.rounds} interleaved rounds, jit_compile={args.jit}, "
        f"{'CPU' if args.cpu_time else 'wall'} time, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print(f"| optimizer | {'CPU ' if args.cpu_time else ''}ms / train step | vs keras.Adam |")
    print("|---|---:|---:|")
    for name, seconds in medians.items():
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / adam:.2f}x |")


if __name__ == "__main__":
    main()
