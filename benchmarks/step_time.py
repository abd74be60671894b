"""Optimizer step time of every registered optimizer and wrapper vs. Keras built-ins.

One command, one process: ``make bench`` (or ``.venv/bin/python
benchmarks/step_time.py``; ``--jit`` for XLA, ``--only wrappers`` for the
wrapper table, ``--names RAdam COCOB`` for some rows only). Wrappers are
timed around ``keras.optimizers.Adam`` next to the Keras built-in option
that does the same job, where one exists. For each optimizer a compiled
``tf.function`` applies fixed gradients to a ~1.1M-parameter set of
variables (a 1024x1024 kernel, a 1024x64 kernel and their biases). Every
function is traced first; then, round after round, each one runs
``--steps`` steps (interleaved, so a change in machine load hits all rows
alike) and the median over the rounds is reported with its ratio to
``keras.optimizers.Adam`` measured in the same process. ``--cpu-time``
runs TensorFlow on one thread and times the process's CPU time instead of
the wall clock: the work a step does, which load from other processes on a
shared machine barely changes. Prints a Markdown table (the one in the
README).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_optsuite.optimizers import REGISTRY, WRAPPERS  # noqa: E402

SHAPES = [(1024, 1024), (1024,), (1024, 64), (64,)]


def make_runner(make_optimizer, steps: int, jit: bool):
    """A traced, warmed-up function that applies ``steps`` optimizer steps."""
    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.normal(size=s).astype("float32")) for s in SHAPES]
    grads = [tf.constant(rng.normal(size=s).astype("float32")) for s in SHAPES]
    optimizer = make_optimizer()
    optimizer.build(variables)

    @tf.function(jit_compile=jit)
    def run_steps():
        for _ in tf.range(steps):
            optimizer.apply(grads, variables)

    run_steps()  # trace and warm up
    return run_steps


def candidates(only: str, names: list[str] | None) -> dict:
    """``{row name: optimizer factory}``, Keras's Adam first."""
    found = {"keras.Adam": keras.optimizers.Adam}
    if only in ("all", "optimizers"):
        found["keras.SGD(momentum)"] = lambda: keras.optimizers.SGD(momentum=0.9)
        found["keras.Lion"] = keras.optimizers.Lion
        found.update({
            spec.name: spec.cls for spec in REGISTRY.values()
            # Closure methods cannot step on fixed gradients, and the
            # preconditioned ones (Shampoo, SOAP) are matrix work, not
            # element-wise: benchmarks/step_cost.py times them in a whole
            # training step (--names Shampoo SOAP adds them here).
            if not getattr(spec.cls, "needs_closure", False)
            and (spec.family != "preconditioned" or any(spec.name in n for n in names or ()))
        })
    if only in ("all", "wrappers"):
        # The Keras built-in options closest to our wrappers (none is correct
        # under MirroredStrategy: see the README).
        found["keras.Adam(use_ema=True)"] = lambda: keras.optimizers.Adam(use_ema=True)
        found["keras.Adam(global_clipnorm=1)"] = lambda: keras.optimizers.Adam(global_clipnorm=1.0)
        found["keras.Adam(gradient_accumulation_steps=3)"] = (
            lambda: keras.optimizers.Adam(gradient_accumulation_steps=3)
        )
        for spec in WRAPPERS.values():
            if getattr(spec.cls, "needs_closure", False):
                continue  # its cost is a second forward/backward pass: benchmarks/step_cost.py
            found[f"{spec.name}(keras.Adam)"] = (
                lambda spec=spec: spec.wrap(keras.optimizers.Adam())
            )
    if names:
        found = {name: make for name, make in found.items()
                 if name == "keras.Adam" or any(word in name for word in names)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed round")
    parser.add_argument("--rounds", "--repeats", type=int, default=7,
                        help="interleaved timed rounds (median reported)")
    parser.add_argument("--jit", action="store_true", help="compile the steps with XLA")
    parser.add_argument(
        "--only", choices=["all", "optimizers", "wrappers"], default="all",
        help="which table to measure",
    )
    parser.add_argument("--names", nargs="*", default=None,
                        help="row names (substrings) to measure besides keras.Adam")
    parser.add_argument("--cpu-time", action="store_true",
                        help="one TensorFlow thread, timed by process CPU time (not wall clock)")
    args = parser.parse_args()
    clock = time.perf_counter
    if args.cpu_time:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        clock = time.process_time

    runners = {}
    for name, make in candidates(args.only, args.names).items():
        runners[name] = make_runner(make, args.steps, args.jit)
        print(f"  traced {name}", flush=True)
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for round_index in range(args.rounds):
        for name, run_steps in runners.items():  # interleaved
            start = clock()
            run_steps()
            samples[name].append((clock() - start) / args.steps)
        print(f"  round {round_index + 1}/{args.rounds} done", flush=True)

    seconds = {name: statistics.median(values) for name, values in samples.items()}
    adam = seconds["keras.Adam"]
    params = sum(int(np.prod(s)) for s in SHAPES)
    print(
        f"\n{params / 1e6:.2f}M parameters, {args.steps} steps x {args.rounds} interleaved rounds, "
        f"jit_compile={args.jit}, {'one thread, CPU time' if args.cpu_time else 'wall clock'}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs"
        + (f", XLA_FLAGS={os.environ['XLA_FLAGS']}" if os.environ.get("XLA_FLAGS") else "")
        + f", load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| optimizer | ms / step | vs keras.Adam |")
    print("|---|---:|---:|")
    for name, value in seconds.items():
        print(f"| {name} | {value * 1e3:.2f} | {value / adam:.2f}x |")


if __name__ == "__main__":
    main()
