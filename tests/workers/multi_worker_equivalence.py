"""Train every equivalence subject as one worker of a MultiWorkerMirroredStrategy cluster.

Run by ``launch`` (which sets ``TF_CONFIG``):
``python tests/workers/multi_worker_equivalence.py PLAN_DIR``. The test
writes ``PLAN_DIR/plan.json`` (one entry per subject: a serialized optimizer
or layer, see :func:`train`) and ``PLAN_DIR/data.npz``; each worker trains
every subject in turn on one strategy, then writes ``PLAN_DIR/worker<i>.npz``
(``"<subject id>|<variable path>"``: final value) and
``PLAN_DIR/worker<i>.json`` (per subject: seconds, or the error). The test
imports :func:`train` and :func:`draw_masks` and runs them with the default
(one-device) strategy for the references: the global batch is the same,
split across the workers.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import time
import traceback

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

GLOBAL_BATCH = 32
# One epoch: every epoch creates a distributed iterator, which costs more
# than the steps themselves. SWA averages from step 10: 16 steps cover it.
EPOCHS = 1
LAYER_EXAMPLES = 256  # 8 steps
MASK_DRAWS = 16  # training-mode calls per stochastic layer in draw_masks
SEED = 0


def _set_seed() -> None:
    import keras

    keras.utils.set_random_seed(SEED)


def _name(index: int, variable) -> str:
    """``"3:sequential_dense_kernel_momentum"``: the position and the name
    without Keras's uniquifying numbers (``sequential_7``), which differ
    between processes. Not the path: under MultiWorkerMirroredStrategy a
    wrapper's inner optimizer creates its variables outside the wrapper's
    name scope (``adam/...``, not ``lookahead/adam/...``)."""
    return f"{index}:{re.sub(r'_[0-9]+', '', variable.name)}"


def _variables(model) -> dict[str, np.ndarray]:
    """The model's trainable and non-trainable weights and the optimizer's
    variables, by group, position and name.

    Seed-generator states are left out (they are not weights: see
    ``model.weights``).
    """
    groups = {
        "trainable": model.trainable_weights,
        "non_trainable": model.non_trainable_weights,
        "optimizer": model.optimizer.variables,
    }
    return {
        f"{group}/{_name(i, v)}": np.asarray(v)
        for group, variables in groups.items()
        for i, v in enumerate(variables)
    }


def _layer_data(input_shape) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(LAYER_EXAMPLES, *input_shape)).astype("float32")
    y = rng.normal(size=(LAYER_EXAMPLES, 3)).astype("float32")
    return x, y


def _layer_model(layer, input_shape, residual_pair):
    """Input -> the layer -> Flatten -> Dense(3), as tests/test_layer_contract.py builds it."""
    import keras

    inputs = keras.Input(tuple(input_shape))
    if residual_pair:
        branch = keras.layers.Dense(input_shape[-1], name="branch")(inputs)
        hidden = layer([inputs, branch])
    else:
        hidden = layer(inputs)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs)


def train(entry: dict, strategy, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Train one subject of the plan under ``strategy``; return its variables.

    Returns the final values of every model weight and optimizer variable
    (``"trainable/..."``, ``"non_trainable/..."``, ``"optimizer/..."``) and
    the weights before training (``"initial/trainable/..."``).

    ``entry["kind"]``:

    - ``"optimizer"``: the MLP 64-16-10 on ``data["x"], data["y"]`` (digits)
      with the serialized optimizer ``entry["optimizer"]``;
    - ``"layer"``: the serialized layer ``entry["layer"]`` in the layer
      contract's model, on seeded normal data, with SGD + momentum;
    - ``"mixing"``: the serialized batch-mixing layer mapped over a
      ``tf.data`` pipeline of global batches of digits images, feeding a
      linear classifier.

    Always ``GLOBAL_BATCH`` examples per step, ``EPOCHS`` epoch(s), no
    shuffling, weights fixed by the seed.
    """
    import keras

    entry = copy.deepcopy(entry)  # from_config consumes nested configs
    kind = entry["kind"]
    _set_seed()
    with strategy.scope():
        if kind == "optimizer":
            model = keras.Sequential(
                [keras.Input((64,)), keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(10)]
            )
            optimizer = keras.optimizers.deserialize(entry["optimizer"])
            loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            fit_data = {"x": data["x"], "y": data["y"], "batch_size": GLOBAL_BATCH}
        elif kind == "layer":
            layer = keras.saving.deserialize_keras_object(entry["layer"])
            model = _layer_model(layer, entry["input_shape"], entry.get("residual_pair", False))
            optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
            loss = keras.losses.MeanSquaredError()
            x, y = _layer_data(entry["input_shape"])
            fit_data = {"x": x, "y": y, "batch_size": GLOBAL_BATCH}
        elif kind == "mixing":
            mixing = keras.saving.deserialize_keras_object(entry["layer"])
            model = keras.Sequential(
                [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
            )
            optimizer = keras.optimizers.SGD(0.1)
            loss = keras.losses.CategoricalCrossentropy(from_logits=True)
            images = data["x"].reshape(-1, 8, 8, 1)
            dataset = (
                tf.data.Dataset.from_tensor_slices((images, data["y"]))
                .batch(GLOBAL_BATCH, drop_remainder=True)
                .map(mixing)
            )
            fit_data = {"x": dataset}
        else:
            raise ValueError(f"unknown kind={kind!r} in entry {entry['id']!r}")
        model.compile(optimizer=optimizer, loss=loss)
    initial = {f"initial/trainable/{_name(i, w)}": np.asarray(w) for i, w in enumerate(model.trainable_weights)}
    model.fit(**fit_data, epochs=EPOCHS, shuffle=False, verbose=0)
    return {**initial, **_variables(model)}


def draw_masks(entry: dict, strategy) -> np.ndarray:
    """``MASK_DRAWS`` training-mode outputs of a stochastic layer (this replica's).

    The inputs are ones (``entry["input_shape"]``; for a residual pair the
    shortcut is 0.5): ``GLOBAL_BATCH // 2`` examples per replica under a
    two-replica strategy, so that replicas drawing one mask would give
    equal outputs, and the whole global batch (the two halves stacked)
    under a one-replica strategy. Returns an array of shape
    ``(MASK_DRAWS, examples, ...)``.
    """
    import keras

    entry = copy.deepcopy(entry)
    half = GLOBAL_BATCH // 2
    replicas = strategy.num_replicas_in_sync
    shape = tuple(entry["input_shape"])
    ones = np.ones((half * (2 if replicas == 1 else 1), *shape), "float32")
    shortcut = np.full_like(ones, 0.5)
    _set_seed()
    with strategy.scope():
        layer = keras.saving.deserialize_keras_object(entry["layer"])
        args = [shortcut, ones] if entry.get("residual_pair") else ones
        layer(args, training=False)  # build (DropConnect's kernel) outside the loop

    @tf.function
    def step(inputs):
        return strategy.run(lambda x: layer(x, training=True), args=(inputs,))

    draws = []
    for _ in range(MASK_DRAWS):
        output = step(args)
        draws.append(np.asarray(strategy.experimental_local_results(output)[0]))
    return np.stack(draws)


def main(plan_dir: str) -> None:
    # Importing keras_optsuite registers the classes the plan names.
    from keras_optsuite.distribute import enable_multi_worker_fit

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    enable_multi_worker_fit()
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    index = strategy.cluster_resolver.task_id
    say = lambda message: print(f"worker {index}: {message}", flush=True)  # noqa: E731
    say(f"{strategy.num_replicas_in_sync} replicas in sync")

    with open(os.path.join(plan_dir, "plan.json")) as f:
        plan = json.load(f)
    data = dict(np.load(os.path.join(plan_dir, "data.npz")))
    arrays: dict[str, np.ndarray] = {}
    report: dict[str, dict] = {}
    for entry in plan:
        start = time.perf_counter()
        try:
            if entry["kind"] == "masks":
                arrays[f"{entry['id']}|masks"] = draw_masks(entry, strategy)
            else:
                for path, value in train(entry, strategy, data).items():
                    arrays[f"{entry['id']}|{path}"] = value
            report[entry["id"]] = {"seconds": time.perf_counter() - start}
        except Exception:  # recorded for the test to name; the same error on both workers
            report[entry["id"]] = {"error": traceback.format_exc()}
        outcome = report[entry["id"]]
        say(f"{entry['id']}: " + (f"{outcome['seconds']:.1f} s" if "seconds" in outcome
                                 else "failed: " + outcome["error"].strip().splitlines()[-1]))
    np.savez(os.path.join(plan_dir, f"worker{index}.npz"), **arrays)
    with open(os.path.join(plan_dir, f"worker{index}.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
