"""Hessian-vector products: back-over-back vs forward-over-back, as a ratio to a plain gradient.

Times ``keras_optsuite.optimizers.closure.hessian_vector_product`` (what
AdaHessian and Sophia call once per step through the closure train step)
in both modes, and a plain ``GradientTape`` gradient of the same loss, each
as one compiled ``tf.function`` on a fixed batch: an MLP with ~1.07M
parameters (784-1024-256-10) and a small convnet (32x32x3 input, two 3x3
convolutions, global pooling, ~20k parameters). All functions are traced and
warmed up first; then, round after round, each runs ``--calls`` times (the
runs interleaved, so drift in machine speed hits all alike), and the median
per-call time over the rounds is reported with its ratio to the gradient
measured in the same process. The fastest mode is AdaHessian's default
``hvp_mode``.

    .venv/bin/python benchmarks/hvp_modes.py [--calls 10] [--rounds 7] [--batch 128] [--jit]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_optsuite.optimizers.closure import HVP_MODES, hessian_vector_product  # noqa: E402

MLP_LAYERS = (784, 1024, 256, 10)


def mlp() -> tuple[keras.Model, tuple[int, ...]]:
    model = keras.Sequential(
        [keras.Input((MLP_LAYERS[0],))]
        + [keras.layers.Dense(units, activation="relu") for units in MLP_LAYERS[1:-1]]
        + [keras.layers.Dense(MLP_LAYERS[-1])]
    )
    return model, (MLP_LAYERS[0],)


def convnet() -> tuple[keras.Model, tuple[int, ...]]:
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.Conv2D(64, 3, strides=2, activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ])
    return model, (32, 32, 3)


MODELS = {"MLP 784-1024-256-10": mlp, "convnet 32x32x3 (conv32-conv64-pool-dense)": convnet}


def functions(make: Callable, batch: int, jit: bool) -> tuple[int, dict[str, Callable]]:
    """``(parameters, {"gradient": f, mode: f, ...})``, each traced and warmed up."""
    keras.utils.set_random_seed(0)
    model, input_shape = make()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, *input_shape)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, size=batch).astype("int32"))
    loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    variables = model.trainable_variables
    vectors = [tf.constant(rng.choice([-1.0, 1.0], size=v.shape).astype("float32")) for v in variables]

    def loss_fn():
        return loss_object(y, model(x, training=True))

    def gradient():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        return tape.gradient(loss, variables)

    found = {"gradient": tf.function(gradient, jit_compile=jit)}
    for mode in HVP_MODES:
        found[mode] = tf.function(
            lambda mode=mode: hessian_vector_product(loss_fn, variables, vectors, mode=mode)[1],
            jit_compile=jit,
        )
    # Both modes compute the same product (checked here, on the benchmark's own models).
    products = [found[mode]() for mode in HVP_MODES]
    for a, b in zip(*products):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-3, atol=1e-5)
    for function in found.values():
        for _ in range(3):
            function()
    return model.count_params(), found


def per_call(function: Callable, calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        result = function()
    # Wait for the last call's outputs (eager execution on CPU is synchronous already).
    _ = [r.numpy() for r in result[:1]]
    return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10, help="calls per timed run")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (median reported)")
    parser.add_argument("--batch", type=int, default=128, help="batch size")
    parser.add_argument("--jit", action="store_true", help="compile with XLA")
    args = parser.parse_args(argv)

    built = {}
    for name, make in MODELS.items():
        built[name] = functions(make, args.batch, args.jit)
        print(f"  built {name}", file=sys.stderr, flush=True)
    samples = {(name, kind): [] for name, (_, found) in built.items() for kind in found}
    for round_index in range(args.rounds):
        for name, (_, found) in built.items():
            for kind, function in found.items():
                samples[(name, kind)].append(per_call(function, args.calls))
        print(f"  round {round_index + 1}/{args.rounds} done", file=sys.stderr, flush=True)

    medians = {key: statistics.median(values) for key, values in samples.items()}
    print(
        f"batch {args.batch}, {args.calls} calls x {args.rounds} interleaved rounds, "
        f"jit_compile={args.jit}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    print("| model | parameters | computation | ms / call | vs gradient |")
    print("|---|---:|---|---:|---:|")
    for name, (parameters, found) in built.items():
        gradient = medians[(name, "gradient")]
        for kind in found:
            seconds = medians[(name, kind)]
            label = "gradient" if kind == "gradient" else f"HVP {kind}"
            print(f"| {name} | {parameters:,} | {label} | {seconds * 1e3:.2f} | {seconds / gradient:.2f}x |")
    print()
    for name in built:
        fastest = min(HVP_MODES, key=lambda mode: medians[(name, mode)])
        print(f"fastest on {name}: {fastest}")


if __name__ == "__main__":
    main()
