"""Compare optimizers on scikit-learn's digits (no downloads) and report.

``optsuite demo`` (and ``make demo``) runs this with the defaults below:
a small MLP is trained from the same initial weights with each optimizer,
and the job writes, under ``--output-dir``:

- ``results.json``: final metrics, wall time and hyperparameters per optimizer;
- ``history.csv``: per-epoch metrics of every run;
- ``curves.png``: training and validation loss curves side by side.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

DEFAULT_OPTIMIZERS = ("Adam", "RAdam", "AdaBelief")


@dataclasses.dataclass
class DemoConfig:
    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS
    # One learning rate for every optimizer, so the comparison is like for
    # like; None gives each optimizer its registry-tuned value.
    learning_rate: float | None = 0.003
    epochs: int = 15
    batch_size: int = 64
    hidden_units: int = 64
    validation_fraction: float = 0.25
    seed: int = 0
    output_dir: Path = Path("outputs/demo")


def _make_optimizer(name: str, learning_rate: float | None = None):
    """A keras-optsuite optimizer (tuned defaults) or a Keras built-in by name."""
    import keras

    from keras_optsuite.optimizers import REGISTRY, WRAPPERS, get_spec

    wrapper = {key.lower(): spec for key, spec in WRAPPERS.items()}.get(name.split(">", 1)[-1].lower())
    if wrapper is not None:
        raise ValueError(
            f"name={name!r} is a wrapper: it adds one idea to an optimizer it wraps "
            f"({wrapper.name}(\"adam\") in code), and the demo compares optimizers "
            f"({', '.join(REGISTRY)}) or Keras built-ins such as 'adam'"
        )
    overrides = {} if learning_rate is None else {"learning_rate": float(learning_rate)}
    try:
        spec = get_spec(name)
    except ValueError:
        spec = None  # not ours: try Keras's built-ins
    if spec is not None:
        return spec.create(**overrides)
    try:
        optimizer_class = type(keras.optimizers.get(name.lower()))
    except ValueError:
        raise ValueError(
            f"Unknown optimizer name={name!r}: use a keras-optsuite optimizer "
            f"({', '.join(REGISTRY)}) or a Keras built-in such as 'adam'"
        ) from None
    return optimizer_class(**overrides)


def _load_digits(config: DemoConfig):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    return train_test_split(
        x, y, test_size=config.validation_fraction, random_state=config.seed, stratify=y
    )


def run(config: DemoConfig, out=sys.stdout) -> dict[str, Any]:
    """Train one model per optimizer and write the report files."""
    import keras

    # Built up front, so a typo or a bad learning rate fails before any training.
    optimizers = [(name, _make_optimizer(name, config.learning_rate)) for name in config.optimizers]

    x_train, x_val, y_train, y_val = _load_digits(config)
    keras.utils.set_random_seed(config.seed)
    template = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(config.hidden_units, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    initial_weights = template.get_weights()

    config.output_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    histories: dict[str, dict[str, list[float]]] = {}
    for index, (name, optimizer) in enumerate(optimizers, start=1):
        print(f"[{index}/{len(optimizers)}] training with {name} "
              f"for {config.epochs} epochs ...", file=out, flush=True)
        model = keras.models.clone_model(template)
        model.set_weights(initial_weights)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        started = time.perf_counter()
        history = model.fit(
            x_train, y_train,
            validation_data=(x_val, y_val),
            batch_size=config.batch_size,
            epochs=config.epochs,
            verbose=0,
        ).history
        seconds = time.perf_counter() - started
        histories[name] = history
        results[name] = {
            "train_accuracy": history["accuracy"][-1],
            "val_accuracy": history["val_accuracy"][-1],
            "val_loss": history["val_loss"][-1],
            "seconds": round(seconds, 2),
            "optimizer_config": {
                k: v for k, v in optimizer.get_config().items() if v is not None
            },
        }
        print(f"      val_accuracy={results[name]['val_accuracy']:.4f} "
              f"val_loss={results[name]['val_loss']:.4f} ({seconds:.1f}s)", file=out, flush=True)

    _write_reports(config, results, histories)
    _print_table(config, results, out)
    return results


def _write_reports(config: DemoConfig, results, histories) -> None:
    (config.output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str))
    with open(config.output_dir / "history.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        metrics = sorted(next(iter(histories.values())))
        writer.writerow(["optimizer", "epoch", *metrics])
        for name, history in histories.items():
            for epoch in range(len(history[metrics[0]])):
                writer.writerow([name, epoch + 1, *(history[m][epoch] for m in metrics)])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for name, history in histories.items():
        epochs = range(1, len(history["loss"]) + 1)
        axes[0].plot(epochs, history["loss"], label=name)
        axes[1].plot(epochs, history["val_loss"], label=name)
    for axis, title in zip(axes, ("training loss", "validation loss")):
        axis.set_title(title)
        axis.set_xlabel("epoch")
        axis.set_yscale("log")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("cross-entropy")
    axes[1].legend()
    fig.suptitle("keras-optsuite demo: digits MLP, same initial weights")
    fig.tight_layout()
    fig.savefig(config.output_dir / "curves.png", dpi=100)
    plt.close(fig)


def _print_table(config: DemoConfig, results, out) -> None:
    print("", file=out)
    print(f"{'optimizer':<12} {'train acc':>9} {'val acc':>8} {'val loss':>9} {'time':>7}", file=out)
    for name, r in sorted(results.items(), key=lambda kv: kv[1]["val_loss"]):
        print(f"{name:<12} {r['train_accuracy']:>9.4f} {r['val_accuracy']:>8.4f} "
              f"{r['val_loss']:>9.4f} {r['seconds']:>6.1f}s", file=out)
    where = config.output_dir.resolve()
    print(f"\nResults: {where / 'results.json'}\n"
          f"History: {where / 'history.csv'}\n"
          f"Plot:    {where / 'curves.png'}", file=out)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument("--optimizers", nargs="+", default=list(defaults.optimizers),
                        metavar="NAME", help="optimizers to compare (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate,
                        help="learning rate for every optimizer; 0 or less means each "
                        "optimizer's tuned value (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=defaults.epochs,
                        help="epochs per optimizer (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="batch size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the split and the initial weights (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=defaults.output_dir,
                        help="where the report files go (default: %(default)s)")


def config_from_args(args: argparse.Namespace) -> DemoConfig:
    if args.epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got epochs={args.epochs}")
    if args.batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got batch_size={args.batch_size}")
    return DemoConfig(
        optimizers=tuple(args.optimizers),
        learning_rate=args.learning_rate if args.learning_rate > 0 else None,
        epochs=args.epochs, batch_size=args.batch_size,
        seed=args.seed, output_dir=args.output_dir,
    )
