"""Optimizer step time of every registered optimizer and wrapper vs. Keras built-ins.

One command, one process: ``make bench`` (or ``.venv/bin/python
benchmarks/step_time.py``; ``--only wrappers`` for the wrapper table).
Wrappers are timed around ``keras.optimizers.Adam`` next to the Keras
built-in option that does the same job, where one exists. For each optimizer a compiled ``tf.function``
applies fixed gradients to a ~1.1M-parameter set of variables (a 1024x1024
kernel, a 1024x64 kernel and their biases); the median of several timed
repeats is reported with its ratio to ``keras.optimizers.Adam`` measured in
the same process. Prints a Markdown table (the one in the README).
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


def time_optimizer(make_optimizer, steps: int, repeats: int, jit: bool) -> float:
    """Median seconds per optimizer step."""
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
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run_steps()
        samples.append((time.perf_counter() - start) / steps)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median reported)")
    parser.add_argument("--jit", action="store_true", help="compile the steps with XLA")
    parser.add_argument(
        "--only", choices=["all", "optimizers", "wrappers"], default="all",
        help="which table to measure",
    )
    args = parser.parse_args()

    candidates = {"keras.Adam": keras.optimizers.Adam}
    if args.only in ("all", "optimizers"):
        candidates["keras.SGD(momentum)"] = lambda: keras.optimizers.SGD(momentum=0.9)
        candidates["keras.Lion"] = keras.optimizers.Lion
        candidates.update({
            spec.name: spec.cls for spec in REGISTRY.values()
            # Closure methods cannot step on fixed gradients: benchmarks/step_cost.py times them.
            if not getattr(spec.cls, "needs_closure", False)
        })
    if args.only in ("all", "wrappers"):
        # The Keras built-in options closest to our wrappers (none is correct
        # under MirroredStrategy: see the README).
        candidates["keras.Adam(use_ema=True)"] = lambda: keras.optimizers.Adam(use_ema=True)
        candidates["keras.Adam(global_clipnorm=1)"] = lambda: keras.optimizers.Adam(global_clipnorm=1.0)
        candidates["keras.Adam(gradient_accumulation_steps=3)"] = (
            lambda: keras.optimizers.Adam(gradient_accumulation_steps=3)
        )
        for spec in WRAPPERS.values():
            if getattr(spec.cls, "needs_closure", False):
                continue  # its cost is a second forward/backward pass: benchmarks/step_cost.py
            candidates[f"{spec.name}(keras.Adam)"] = (
                lambda spec=spec: spec.wrap(keras.optimizers.Adam())
            )
    rows = []
    for name, make in candidates.items():
        rows.append((name, time_optimizer(make, args.steps, args.repeats, args.jit)))
        print(f"  measured {name}", flush=True)

    adam = rows[0][1]
    params = sum(int(np.prod(s)) for s in SHAPES)
    print(
        f"\n{params / 1e6:.2f}M parameters, {args.steps} steps x {args.repeats} repeats, "
        f"jit_compile={args.jit}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print("| optimizer | ms / step | vs keras.Adam |")
    print("|---|---:|---:|")
    for name, seconds in rows:
        print(f"| {name} | {seconds * 1e3:.2f} | {seconds / adam:.2f}x |")


if __name__ == "__main__":
    main()
