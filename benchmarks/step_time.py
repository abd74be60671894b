"""Optimizer step time of every registered optimizer vs. Keras built-ins.

One command, one process: ``make bench`` (or ``.venv/bin/python
benchmarks/step_time.py``). For each optimizer a compiled ``tf.function``
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

from keras_optsuite.optimizers import REGISTRY  # noqa: E402

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
    args = parser.parse_args()

    baselines = {
        "keras.Adam": keras.optimizers.Adam,
        "keras.SGD(momentum)": lambda: keras.optimizers.SGD(momentum=0.9),
        "keras.Lion": keras.optimizers.Lion,
    }
    rows = []
    for name, make in baselines.items():
        rows.append((name, time_optimizer(make, args.steps, args.repeats, args.jit)))
        print(f"  measured {name}", flush=True)
    for spec in REGISTRY.values():
        rows.append((spec.name, time_optimizer(spec.cls, args.steps, args.repeats, args.jit)))
        print(f"  measured {spec.name}", flush=True)

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
