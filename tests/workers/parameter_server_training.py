"""One task of a parameter-server cluster: 1 chief, 2 workers, 2 parameter servers.

Run by ``launch(..., workers=2, ps=2)``:
``python tests/workers/parameter_server_training.py OUT_DIR``. Workers and
parameter servers serve; the chief builds the strategy with
``get_strategy("auto")`` and a partitioner, trains a model whose two
embedding tables are sharded across both parameter servers (with Keras's
Adam, then a fresh copy per method of :func:`methods`, and one that is
refused on sharded variables), and writes
``OUT_DIR/chief.npz`` and ``OUT_DIR/chief.json``. The test builds the same
model with :func:`build_model` and no strategy for the reference.
"""

from __future__ import annotations

import json
import logging
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

VOCABULARY = 40
EMBEDDING_DIM = 4
TOKENS = 4
EXAMPLES = 256
LEARNING_RATE = 0.05
SEQUENTIAL_STEPS = 8  # phase 1: full batch, one step at a time
METHOD_STEPS = 4  # phase 1 again for each of this package's methods (fresh model, same start)
ASYNC_STEPS = 40  # phase 2: mini-batches, both workers at once
ASYNC_BATCH = 32
# The partitioner splits variables of >= 2 * 256 bytes: the two 40 x 4
# float32 tables (640 bytes) in 2 shards, the 8 x 1 Dense kernel not at all.
MIN_SHARD_BYTES = 256


def data():
    """Token ids and a target that is a sum of per-token values (learnable)."""
    ids = np.random.RandomState(0).randint(0, VOCABULARY, (EXAMPLES, TOKENS)).astype("int32")
    token_value = np.random.RandomState(1).uniform(-1, 1, VOCABULARY).astype("float32")
    y = token_value[ids].sum(axis=1, keepdims=True).astype("float32")
    return ids, y


def methods():
    """This package's optimizers and wrappers trained on the cluster: name -> a
    function building the optimizer (called inside the strategy's scope).

    Elementwise steps (RAdam, Adan, Signum's sign step), schedule-free
    weights, an estimate summed over every variable (Prodigy), and the
    wrappers around Keras's Adam (Lookahead, weight averaging, gradient
    accumulation, a chain with a global-norm clip small enough to be active).
    """
    import keras

    from keras_optsuite.optimizers import (
        Adan,
        Chain,
        ClipByGlobalNorm,
        ExponentialMovingAverage,
        GradientAccumulation,
        Lookahead,
        Prodigy,
        RAdam,
        ScheduleFreeAdamW,
        Signum,
    )

    def adam():
        return keras.optimizers.Adam(LEARNING_RATE)

    return {
        "RAdam": lambda: RAdam(LEARNING_RATE),
        "Adan": lambda: Adan(LEARNING_RATE),
        "Signum": lambda: Signum(0.01),
        "ScheduleFreeAdamW": lambda: ScheduleFreeAdamW(LEARNING_RATE),
        "Prodigy": lambda: Prodigy(d0=0.01),  # d0 1e-6 moves the weights by 4e-5 in 4 steps
        "Lookahead(Adam)": lambda: Lookahead(adam(), sync_period=2),
        "ExponentialMovingAverage(Adam)": lambda: ExponentialMovingAverage(adam(), decay=0.5),
        "GradientAccumulation(Adam)": lambda: GradientAccumulation(adam(), steps=2),
        "Chain(Adam)": lambda: Chain(adam(), [ClipByGlobalNorm(0.05)]),
    }


def whole_variables(model, per_source):
    """Values given per optimizer variable (the shards of a sharded variable
    one by one) regrouped per model variable, shards concatenated row-wise."""
    from keras_optsuite.distribute.parameter_server import variable_shards

    values, start = [], 0
    for variable in model.trainable_variables:
        count = len(variable_shards(variable))
        values.append(np.concatenate([np.asarray(v) for v in per_source[start:start + count]]))
        start += count
    return values


def build_model(optimizer=None):
    """Two embedding tables (Keras's and ShardedEmbedding) and a Dense head,
    compiled with ``optimizer`` (default: Keras's Adam)."""
    import keras

    from keras_optsuite.distribute.parameter_server import ShardedEmbedding

    keras.utils.set_random_seed(0)
    ids = keras.Input((TOKENS,), dtype="int32")
    pooled = [
        keras.layers.GlobalAveragePooling1D()(layer(ids))
        for layer in (
            keras.layers.Embedding(VOCABULARY, EMBEDDING_DIM, name="keras_embedding"),
            ShardedEmbedding(VOCABULARY, EMBEDDING_DIM, name="sharded_embedding"),
        )
    ]
    output = keras.layers.Dense(1, name="head")(keras.layers.Concatenate()(pooled))
    model = keras.Model(ids, output)
    model.compile(optimizer or keras.optimizers.Adam(LEARNING_RATE), "mse")
    return model


def full_batch_dataset(input_context):
    import tensorflow as tf

    return tf.data.Dataset.from_tensors(data()).repeat()


def mini_batch_dataset(input_context):
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices(data())
        .shuffle(EXAMPLES, seed=input_context.input_pipeline_id)
        .repeat()
        .batch(ASYNC_BATCH)
    )


def _error(action):
    try:
        action()
    except Exception as error:  # noqa: BLE001  (reported to the test)
        return f"{type(error).__name__}: {error}"
    return None


def main(out_dir):
    import tensorflow as tf

    from keras_optsuite.distribute.strategy import get_strategy
    from keras_optsuite.distribute.parameter_server import (
        serve_if_worker_or_ps,
        train_with_parameter_servers,
        variable_shards,
    )

    serve_if_worker_or_ps()  # workers and parameter servers never return

    log = logging.getLogger("keras_optsuite.distribute.strategy")
    log.addHandler(logging.StreamHandler(sys.stdout))
    log.setLevel(logging.INFO)
    strategy = get_strategy(
        "auto",
        variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=MIN_SHARD_BYTES, max_shards=2
        ),
    )
    with strategy.scope():
        model = build_model()
    report = {"strategy": type(strategy).__name__, "placement": {}}
    for variable in model.trainable_variables:
        report["placement"][variable.path] = [
            {"device": shard.device, "shape": list(shard.shape)} for shard in variable_shards(variable)
        ]
    arrays = {f"initial_{i}": w for i, w in enumerate(model.get_weights())}
    # Which ops each embedding's lookup runs: row gathers per shard, or the
    # whole table concatenated first.
    report["lookup_ops"] = {}
    for name in ("keras_embedding", "sharded_embedding"):
        layer = model.get_layer(name)
        graph = tf.function(layer).get_concrete_function(tf.TensorSpec([None, TOKENS], tf.int32)).graph
        report["lookup_ops"][name] = sorted({op.type for op in graph.get_operations()})

    report["sequential_losses"] = train_with_parameter_servers(
        model, full_batch_dataset, SEQUENTIAL_STEPS, wait_each_step=True
    )
    report["sequential_iterations"] = int(model.optimizer.iterations.numpy())
    arrays.update({f"sequential_{i}": w for i, w in enumerate(model.get_weights())})
    print("chief: sequential phase done", flush=True)
    initial = [arrays[f"initial_{i}"] for i in range(len(model.get_weights()))]
    report["methods"] = {}
    for name, make in methods().items():
        with strategy.scope():
            trained = build_model(make())
        trained.set_weights(initial)
        losses = train_with_parameter_servers(trained, full_batch_dataset, METHOD_STEPS, wait_each_step=True)
        report["methods"][name] = losses
        arrays.update({f"{name}_{i}": w for i, w in enumerate(trained.get_weights())})
        averaged = getattr(trained.optimizer, "averaged_variables", None)
        if averaged is not None:
            arrays.update({f"{name}_averaged_{i}": w for i, w in enumerate(whole_variables(trained, averaged))})
    print(f"chief: {len(report['methods'])} methods trained", flush=True)
    from keras_optsuite.optimizers import Shampoo

    with strategy.scope():
        refused = build_model(Shampoo(LEARNING_RATE))
    report["whole_variable_error"] = _error(
        lambda: train_with_parameter_servers(refused, full_batch_dataset, 1, wait_each_step=True)
    )
    report["async_losses"] = train_with_parameter_servers(model, mini_batch_dataset, ASYNC_STEPS)
    arrays.update({f"final_{i}": w for i, w in enumerate(model.get_weights())})
    print("chief: asynchronous phase done", flush=True)

    optimizer = model.optimizer
    report["iterations"] = int(optimizer.iterations.numpy())
    report["slot_devices"] = {variable.path: variable.value.device for variable in optimizer.variables}
    # Inference on the coordinator, reading the sharded tables from the ps tasks.
    x, y = data()
    arrays["coordinator_predictions"] = model(x, training=False).numpy()

    # What Keras itself cannot do here (documented in parameter_server.py).
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model(x, training=True))
    report["keras_variable_gradient_error"] = _error(lambda: tape.gradient(loss, model.trainable_variables))
    with strategy.scope():
        other = build_model()
    report["fit_error"] = _error(lambda: other.fit(x, y, batch_size=ASYNC_BATCH, epochs=1, verbose=0))

    np.savez(os.path.join(out_dir, "chief.npz"), **arrays)
    with open(os.path.join(out_dir, "chief.json"), "w") as f:
        json.dump(report, f)


if __name__ == "__main__":
    main(sys.argv[1])
