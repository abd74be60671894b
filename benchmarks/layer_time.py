"""Training-step cost of each keras-optsuite layer against its Keras counterpart.

For every pair, one ``tf.function`` computes the layer's training-mode
output on a fixed batch and the gradients of its sum with respect to the
inputs and the layer's trainable weights (forward + backward, what a train
step pays for the layer). Both sides are timed in the same process,
interleaved: the median over repeats of ``steps`` calls, as a ratio to the
Keras layer.

    .venv/bin/python benchmarks/layer_time.py [--jit] [--repeats 7] [--steps 20] [--only DropBlock2D]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_optsuite import layers as L  # noqa: E402

IMAGES = (64, 32, 32, 32)  # batch, height, width, channels
FEATURES = (256, 512)


def _pairs():
    """(our layer, the Keras layer it replaces or extends, input shape)."""
    conv = lambda: keras.layers.Conv2D(32, 3, padding="same")  # noqa: E731
    return [
        ("DropBlock2D", L.DropBlock2D(0.1, block_size=7, seed=1), keras.layers.Dropout(0.1, seed=1), IMAGES),
        ("DropPath", L.DropPath(0.1, seed=1), keras.layers.Dropout(0.1, seed=1), IMAGES),
        ("StochasticDepth", L.StochasticDepth(0.8, seed=1), keras.layers.Add(), IMAGES),
        ("DropConnect(Dense)", L.DropConnect(keras.layers.Dense(512), rate=0.1, seed=1),
         keras.layers.Dense(512), FEATURES),
        ("WeightNormalization(Conv2D)", L.WeightNormalization(conv()), conv(), IMAGES),
        ("BatchRenormalization", L.BatchRenormalization(), keras.layers.BatchNormalization(), IMAGES),
        ("GhostBatchNormalization(16)", L.GhostBatchNormalization(virtual_batch_size=16),
         keras.layers.BatchNormalization(), IMAGES),
    ]


def _step_function(layer, shape, pair_input, jit):
    x = tf.random.stateless_normal(shape, seed=[1, 2])
    inputs = [x, x * 0.5] if pair_input else x
    layer(inputs, training=False)  # build

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = layer([x, x * 0.5] if pair_input else x, training=True)
            loss = tf.reduce_sum(tf.cast(out, tf.float32))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return step


def _time(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        result = step()
    tf.nest.map_structure(lambda t: t.numpy(), result)
    return (time.perf_counter() - start) / steps * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jit", action="store_true", help="compile both sides with XLA")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", nargs="*", help="names of the rows to run")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, jit_compile={args.jit}, "
          f"{os.cpu_count()} CPUs; median of {args.repeats} x {args.steps} forward+backward steps")
    print("| layer | input | ms / step | Keras layer | ms / step | ratio |")
    print("|---|---|---:|---|---:|---:|")
    for name, ours, theirs, shape in _pairs():
        if args.only and name not in args.only:
            continue
        pair = name == "StochasticDepth"
        our_step = _step_function(ours, shape, pair, args.jit)
        their_step = _step_function(theirs, shape, pair, args.jit)
        _time(our_step, 2), _time(their_step, 2)  # trace and warm up
        our_times, their_times = [], []
        for _ in range(args.repeats):  # interleaved
            our_times.append(_time(our_step, args.steps))
            their_times.append(_time(their_step, args.steps))
        ours_ms, theirs_ms = statistics.median(our_times), statistics.median(their_times)
        print(f"| {name} | {shape} | {ours_ms:.2f} | {type(theirs).__name__} | {theirs_ms:.2f} | "
              f"{ours_ms / theirs_ms:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
