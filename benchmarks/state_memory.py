"""Optimizer state bytes per parameter of every registered optimizer and wrapper, measured.

One command, one process: ``.venv/bin/python benchmarks/state_memory.py``.
Each optimizer is built on the parameters ``benchmarks/step_time.py`` times
(a 1024x1024 kernel, a 1024x64 kernel and their biases, float32), and the
bytes of every variable it holds (``optimizer.variables``: what is saved
with the model, a wrapper's inner optimizer included) are summed and divided
by the number of parameters. Nothing is estimated from the docs: a slot the
code creates is counted, one it does not is not. Wrappers are built around
``keras.optimizers.Adam``; their own share is the total minus Adam's.
Prints a Markdown table (the one in the README).
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_optsuite.optimizers import REGISTRY, WRAPPERS  # noqa: E402

SHAPES = [(1024, 1024), (1024,), (1024, 64), (64,)]


def state_bytes(optimizer: keras.optimizers.Optimizer, shapes=SHAPES) -> tuple[int, int]:
    """``(bytes of optimizer.variables, number of parameters)`` once built on ``shapes``."""
    variables = [keras.Variable(np.zeros(s, "float32")) for s in shapes]
    optimizer.build(variables)
    total = sum(
        int(np.prod(v.shape)) * tf.as_dtype(keras.backend.standardize_dtype(v.dtype)).size
        for v in optimizer.variables
    )
    return total, sum(int(np.prod(s)) for s in shapes)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    rows = []
    baselines = {
        "keras.SGD": keras.optimizers.SGD,
        "keras.SGD(momentum)": lambda: keras.optimizers.SGD(momentum=0.9),
        "keras.Lion": keras.optimizers.Lion,
        "keras.Adam": keras.optimizers.Adam,
    }
    for name, make in baselines.items():
        rows.append((name, *state_bytes(make()), None))
    for spec in REGISTRY.values():
        rows.append((spec.name, *state_bytes(spec.cls()), None))
    adam_bytes = state_bytes(keras.optimizers.Adam())[0]
    # Keras's built-in options closest to the wrappers.
    for name, make in {
        "keras.Adam(use_ema=True)": lambda: keras.optimizers.Adam(use_ema=True),
        "keras.Adam(gradient_accumulation_steps=3)": (
            lambda: keras.optimizers.Adam(gradient_accumulation_steps=3)
        ),
    }.items():
        total, params = state_bytes(make())
        rows.append((name, total, params, total - adam_bytes))
    for spec in WRAPPERS.values():
        total, params = state_bytes(spec.wrap(keras.optimizers.Adam()))
        rows.append((f"{spec.name}(keras.Adam)", total, params, total - adam_bytes))

    params = rows[0][2]
    print(
        f"\n{params / 1e6:.2f}M float32 parameters in {len(SHAPES)} tensors {SHAPES}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}\n"
    )
    print("| optimizer | state bytes / parameter | = float32 copies of the weights | wrapper's own |")
    print("|---|---:|---:|---:|")
    for name, total, count, own in rows:
        per = total / count
        own_text = "" if own is None else f"{own / count:.2f} B ({own / count / 4:.2f} copies)"
        print(f"| {name} | {per:.2f} | {per / 4:.2f} | {own_text} |")


if __name__ == "__main__":
    main()
