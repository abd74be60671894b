"""What LazyAdam promises beyond the contract suite (``test_optimizer_contract.py``).

- a sparse (``IndexedSlices``) gradient updates only the rows in the batch,
  as the NumPy lazy reference does, with repeated indices summed and weight
  decay applied to those rows only; every other row of the weights and of
  both moments is left bit for bit as it was;
- the same under MirroredStrategy on 2 devices (every device's copy) and
  under XLA as on one device;
- a dense gradient gives exactly ``keras.optimizers.Adam``'s trajectory.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LOSS, dense_model, mirrored_strategy

from keras_optsuite.optimizers import LazyAdam
from references import lazy_adam as reference

# Exactly representable in float32, so Keras's float32 hyperparameters equal
# the float64 reference's.
HYPER = {"beta_1": 0.875, "beta_2": 0.9990234375, "epsilon": 2.0**-20}
LEARNING_RATE = 2.0**-5
WEIGHT_DECAY = 2.0**-3
ROWS, DIM = 16, 3
TRAINED_ROWS = 10  # tokens are drawn from 0..9: rows 10..15 are never in a batch


def _moments(optimizer, variable):
    """LazyAdam's ``(momentum, velocity)`` slots of ``variable``."""
    prefix = variable.path.replace("/", "_")
    by_name = {v.name: v for v in optimizer.variables}
    return by_name[f"{prefix}_momentum"], by_name[f"{prefix}_velocity"]


def _batches(steps, seed=0):
    """Token batches with repeated tokens, a few rows absent from each step."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, TRAINED_ROWS, size=(steps, 4, 5))
    targets = rng.normal(size=(steps, 4, 5, DIM))
    return tokens, targets


def test_sparse_steps_update_only_the_batch_rows_as_the_lazy_reference():
    steps = 8
    tokens, targets = _batches(steps)
    rng = np.random.default_rng(1)
    init = rng.normal(size=(ROWS, DIM))
    embedding = keras.layers.Embedding(ROWS, DIM, dtype="float64")
    embedding.build()
    embedding.embeddings.assign(init)
    table = embedding.embeddings
    optimizer = LazyAdam(LEARNING_RATE, weight_decay=WEIGHT_DECAY, **HYPER)
    optimizer.build([table])
    tensors = (table, *_moments(optimizer, table))

    expected = init.copy()
    state = reference.init_state(init)
    skipped_trained_rows = 0
    for step in range(steps):
        before = [t.numpy() for t in tensors]
        with tf.GradientTape() as tape:
            # loss = 1/2 sum (E[token] - target)^2: each occurrence's gradient is E[token] - target
            loss = 0.5 * tf.reduce_sum(tf.square(embedding(tokens[step]) - targets[step]))
        (gradient,) = tape.gradient(loss, [table])
        assert isinstance(gradient, tf.IndexedSlices)
        assert len(np.unique(gradient.indices)) < len(gradient.indices), "repeated rows"
        optimizer.apply([gradient], [table])

        indices = tokens[step].ravel()
        values = (expected[tokens[step]] - targets[step]).reshape(-1, DIM)
        expected = reference.sparse_update(
            expected, indices, values, state, step + 1, LEARNING_RATE,
            weight_decay=WEIGHT_DECAY, **HYPER,
        )
        for got, want in zip(tensors, (expected, state["m"], state["v"])):
            np.testing.assert_allclose(
                got.numpy(), want, rtol=1e-9, atol=1e-15,
                err_msg=f"{got.name} differs from the lazy reference at step {step + 1}",
            )
        # Rows absent from this batch (some trained before) did not change at all.
        absent = np.setdiff1d(np.arange(ROWS), indices)
        skipped_trained_rows += np.count_nonzero(absent < TRAINED_ROWS)
        for got, old in zip(tensors, before):
            assert np.array_equal(got.numpy()[absent], old[absent]), got.name

    never = np.arange(TRAINED_ROWS, ROWS)
    assert np.array_equal(table.numpy()[never], init[never])
    for slot in tensors[1:]:
        assert np.array_equal(slot.numpy()[never], np.zeros((len(never), DIM)))
    assert np.abs(table.numpy()[:TRAINED_ROWS] - init[:TRAINED_ROWS]).min() > 0
    assert skipped_trained_rows > 0, "some steps skip rows that other steps train"


def _embedding_model():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(ROWS, DIM),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(2),
        ]
    )


def _fit(strategy=None, jit_compile=False):
    """Train an Embedding + Dense model; returns (weights, [table, m, v] on each device)."""
    tokens, _ = _batches(4)
    x = tokens.reshape(-1, 5).astype("int32")
    y = np.random.default_rng(2).normal(size=(len(x), 2)).astype("float32")
    scope = strategy.scope() if strategy else contextlib.nullcontext()
    with scope:
        model = _embedding_model()
        model.compile(
            optimizer=LazyAdam(0.01, weight_decay=0.25), loss="mse", jit_compile=jit_compile
        )
    initial = model.get_weights()[0]
    # 8 samples per step, 4 per replica: the replicas' row sets overlap and repeat.
    model.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    assert model.optimizer.iterations.numpy() == 4

    table = model.layers[0].embeddings
    tensors = [table, *_moments(model.optimizer, table)]
    local = strategy.experimental_local_results if strategy else lambda value: [value]
    copies = [[copy.numpy() for copy in local(t.value)] for t in tensors]
    never = np.arange(TRAINED_ROWS, ROWS)
    starts = [initial, np.zeros_like(initial), np.zeros_like(initial)]
    for tensor, on_devices, start in zip(tensors, copies, starts):
        for copy in on_devices:
            assert np.array_equal(copy[never], start[never]), f"{tensor.name} on a device"
    assert np.abs(copies[0][0][:TRAINED_ROWS] - initial[:TRAINED_ROWS]).min() > 0
    return model.get_weights(), copies


@pytest.mark.slow
def test_mirrored_strategy_and_xla_match_one_device_on_every_copy():
    weights, copies = _fit()
    # Not the default collective all-reduce: every MirroredStrategy over the
    # same devices in one process reuses the collective instance keys, and an
    # earlier strategy's cached instances (here the all-gather of sparse
    # gradients) abort later strategies' collectives with "Shape mismatch in
    # the collective instance 100". The optimizer sees the same summed
    # IndexedSlices either way and updates each device's copy alike.
    strategy = mirrored_strategy()
    assert strategy.num_replicas_in_sync == 2
    mirrored_weights, mirrored_copies = _fit(strategy)
    jit_weights, jit_copies = _fit(jit_compile=True)

    for got in (mirrored_weights, jit_weights):
        for a, b in zip(got, weights):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for on_devices, want in zip(mirrored_copies + jit_copies, copies + copies):
        for copy in on_devices:
            np.testing.assert_allclose(copy, want[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("weight_decay", [None, 0.0625], ids=["plain", "weight_decay"])
def test_dense_gradients_follow_keras_adam_exactly(digits, weight_decay):
    x, y = digits
    models = {}
    for name, make in (("keras", keras.optimizers.Adam), ("lazy", LazyAdam)):
        model = dense_model()
        model.compile(optimizer=make(learning_rate=0.01, weight_decay=weight_decay), loss=LOSS)
        for start in range(0, 640, 32):
            model.train_on_batch(x[start : start + 32], y[start : start + 32])
        models[name] = model
    for a, b in zip(models["lazy"].get_weights(), models["keras"].get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(models["lazy"].optimizer.variables, models["keras"].optimizer.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
    initial = dense_model().get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(models["lazy"].get_weights(), initial)) > 1e-2
