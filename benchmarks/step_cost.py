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
    .venv/bin/python benchmarks/step_cost.py --sweep | --floor [--steps 100] [--rounds 3] [--cpu-time]

``--sweep`` times Shampoo and SOAP instead, each with its defaults and with
one argument changed at a time (``block_size``, ``precondition_frequency``,
``statistics_compute_steps``, Shampoo's ``root_method``) and with refreshes
and statistics both amortized (every 100 and 10 steps); use ``--steps``
a multiple of the largest frequency (100) so each run holds whole refresh
periods. ``--cpu-time`` times the process's CPU time instead of wall time
(less sensitive to other processes on a shared machine).

``--floor`` splits Shampoo's and SOAP's steps at their defaults into the
steps that refresh the roots or bases and those that do not, and times
alone, on the same model's block shapes, the work each needs that Adam
does not: the block matrix products of every step (statistics,
preconditioning or rotations) and the decompositions of a refresh (an
``eigh`` per factor, or a power iteration and QR per factor), divided by
``precondition_frequency``. ``keras.Adam`` plus these is the floor the
whole step is compared with (the rest is element-wise work: grafting,
moments, norms, the block layout's copies).
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
from keras_optsuite.optimizers.shampoo import (  # noqa: E402
    _batched_roots,
    _block_mode_product,
    _block_statistic,
)
from keras_optsuite.optimizers.soap import power_iteration_basis  # noqa: E402

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


def _refreshes(optimizer, t: int) -> bool:
    """Whether step ``t`` (1-based) of a default Shampoo or SOAP refreshes its roots or bases."""
    frequency = optimizer.precondition_frequency
    if isinstance(optimizer, Shampoo):
        return t >= optimizer.start_preconditioning_step and (t - optimizer.start_preconditioning_step) % frequency == 0
    return t == 1 or t % frequency == 0


def _timed(function, rounds: int, clock) -> float:
    """Median seconds (of ``clock``) of a compiled call of ``function`` over ``rounds`` calls."""
    compiled = tf.function(function)
    compiled()
    samples = []
    for _ in range(rounds):
        start = clock()
        compiled()
        samples.append(clock() - start)
    return statistics.median(samples)


def _extra_work(optimizer, clock, rounds: int) -> tuple[float, float]:
    """Seconds of ``optimizer``'s per-step block products and of one refresh's decompositions, timed alone.

    On random blocks of the shapes its layouts give the model's variables,
    and on the optimizer's own factor statistics (and SOAP's bases) as the
    timed steps left them (an eigensolver's time depends on the spectrum).
    """
    rng = np.random.default_rng(0)
    blocks, axes, factors, bases = [], [], [], []
    for index, layout in enumerate(optimizer._layouts):
        per_region = len(layout.axes)
        for r, region in enumerate(layout.regions if layout.preconditioned else []):
            blocks.append(tf.constant(rng.normal(size=(region.count, *region.block)), "float32"))
            axes.append(layout.axes)
            chosen = slice(r * per_region, (r + 1) * per_region)
            factors.append([tf.constant(f.numpy()) for f in optimizer._statistics[index][chosen]])
            if isinstance(optimizer, SOAP):
                bases.append([tf.constant(q.numpy()) for q in optimizer._bases[index][chosen]])
    rotations = 2 if isinstance(optimizer, SOAP) else 1

    def products():
        out = []
        for batch, ax, fs in zip(blocks, axes, factors):
            out += [tf.reduce_sum(_block_statistic(batch, a)[:, :1]) for a in ax]
            for transpose in [True, False][:rotations]:
                moved = batch
                for a, f in zip(ax, fs):
                    moved = _block_mode_product(f, moved, a, transpose=transpose and rotations == 2)
                out.append(tf.reduce_sum(moved[:1]))
        return tf.add_n(out)

    if isinstance(optimizer, SOAP):
        pairs = [(f, q) for fs, qs in zip(factors, bases) for f, q in zip(fs, qs)]

        def decompositions():
            return tf.add_n([tf.reduce_sum(power_iteration_basis(f, q, optimizer.matrix_epsilon)[:, :1])
                             for f, q in pairs])
    else:
        def decompositions():
            roots = [r for batch, ax, fs in zip(blocks, axes, factors)
                     for r in _batched_roots(fs, float(2 * len(ax)), optimizer.matrix_epsilon,
                                             method=optimizer.root_method)]
            return tf.add_n([tf.reduce_sum(r[:, :1]) for r in roots])

    return _timed(products, rounds, clock), _timed(decompositions, rounds, clock)


def floor_report(steps_per_round: int, rounds: int, clock, unit: str) -> None:
    """``--floor``: Shampoo's and SOAP's steps split into refresh and other steps, against the floor."""
    models = {name: build(make, False) for name, make in
              (("keras.Adam", keras.optimizers.Adam), ("Shampoo", Shampoo), ("SOAP", SOAP))}
    samples: dict[str, dict[bool, list[float]]] = {name: {False: [], True: []} for name in models}
    for round_index in range(rounds):
        for name, (model, x, y) in models.items():
            for _ in range(steps_per_round):
                optimizer = model.optimizer
                t = int(optimizer.iterations.numpy()) + 1
                refresh = name != "keras.Adam" and _refreshes(optimizer, t)
                start = clock()
                model.train_on_batch(x, y)
                samples[name][refresh].append(clock() - start)
        print(f"  round {round_index + 1}/{rounds} done", file=sys.stderr, flush=True)
    adam = statistics.median(samples["keras.Adam"][False])
    print(f"MLP {'-'.join(map(str, LAYERS))}, batch {BATCH}, {steps_per_round} steps x {rounds} interleaved "
          f"rounds per optimizer, defaults, {unit} time, keras.Adam {adam * 1e3:.2f} ms / step; "
          f"pieces timed alone, median of {3 * rounds} calls; ratios to keras.Adam's step\n")
    print("| optimizer | step without refresh | refresh step's extra / frequency | amortized step | "
          "floor: block products / step | floor: decompositions / frequency | floor: Adam + both |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in ("Shampoo", "SOAP"):
        optimizer = models[name][0].optimizer
        frequency = optimizer.precondition_frequency
        plain = statistics.median(samples[name][False])
        refresh = (statistics.median(samples[name][True]) - plain) / frequency
        products, decompositions = _extra_work(optimizer, clock, 3 * rounds)
        decompositions /= frequency
        print(f"| {name} | {plain / adam:.2f}x | {refresh / adam:.2f}x | {(plain + refresh) / adam:.2f}x | "
              f"{products / adam:.2f}x | {decompositions / adam:.2f}x | {1 + (products + decompositions) / adam:.2f}x |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="steps per timed run")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median reported)")
    parser.add_argument("--jit", action="store_true", help="compile the train step with XLA")
    parser.add_argument("--only", nargs="*", default=None, help="names (substrings) to measure besides Adam")
    parser.add_argument("--sweep", action="store_true",
                        help="Shampoo and SOAP against block size, refresh and statistics frequency")
    parser.add_argument("--cpu-time", action="store_true", help="time the process's CPU time, not wall time")
    parser.add_argument("--floor", action="store_true",
                        help="Shampoo and SOAP: refresh and other steps, and the work Adam does not do, timed alone")
    args = parser.parse_args(argv)
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.floor:
        floor_report(args.steps, args.rounds, clock, "CPU" if args.cpu_time else "wall")
        return

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
