"""The contract every keras-optsuite layer keeps, one table row per layer.

Each registered layer (``keras_optsuite.layers.LAYERS``) has a row in
``SUBJECTS`` saying how to build it and what its inference rule is, or a
reason in ``NOT_MODEL_LAYERS`` (batch-mixing layers act on ``(x, y)``
batches in the data pipeline, not inside a model: ``tests/test_mixing.py``
covers them). The checks:

- stochastic layers: ``training=False`` follows the method's inference rule
  (the identity, or ``shortcut + p * residual`` for stochastic depth), and
  the mean of many training outputs is that inference output (a z-test per
  element, fixed seed);
- under ``mixed_float16``: float16 output of the float32 output's shape;
- ``.keras`` round trip after training: same config, every variable (moving
  statistics, step counters, rates) and the same predictions;
- ``jit_compile=True``: the compiled layer matches the eager one at
  inference (and in training for deterministic layers), and ``fit`` trains;
- ``MirroredStrategy`` on 2 logical CPUs: ``fit`` trains, every variable
  holds the same value on both replicas afterwards, and predictions equal a
  single-device model with the same weights.

Method-specific numerics (NumPy references) live beside: test_dropblock,
test_normalization, test_kernel_reparameterization, test_stochastic_depth.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import mirrored_strategy
from keras_optsuite import layers as optsuite_layers
from keras_optsuite.layers import LAYERS
from keras_optsuite.schedules import Ramp
from references import dropblock as dropblock_reference

BATCH = 16


@dataclasses.dataclass(frozen=True)
class LayerSubject:
    """How the contract suite builds and checks one layer."""

    make: Callable[[], keras.layers.Layer]
    input_shape: tuple[int, ...]  # one example's shape
    stochastic: bool  # training outputs are random draws
    # The method's inference output in NumPy, given the inputs and the built
    # layer (identity when None); for stochastic layers, also the mean of
    # the training outputs.
    inference: Callable[[Any, keras.layers.Layer], np.ndarray] | None = None
    residual_pair: bool = False  # called on [shortcut, residual]
    # The mean of the training outputs when it is not the inference output.
    expectation: Callable[[Any, keras.layers.Layer], np.ndarray] | None = None
    draws: int = 400  # training draws for the expectation z-test


def _stochastic_depth_inference(inputs, layer):
    shortcut, residual = inputs
    return shortcut + layer.survival_probability * residual


def _dense_inference(inputs, layer):
    """A Dense wrapper's inference: the wrapped layer with its stored kernel."""
    kernel = np.asarray(layer.layer.kernel)
    return inputs @ kernel + np.asarray(layer.layer.bias)


def _dropblock_expectation(inputs, layer):
    """DropBlock keeps the expected *sum*: per position the mean output is
    ``x P(keep) / mean P(keep)`` (edges are covered by fewer block centres)."""
    keep = 1.0 - dropblock_reference.drop_probability(inputs.shape[1:-1], layer.block_size, layer.rate)
    return inputs * (keep / keep.mean())[None, ..., None]


SUBJECTS: dict[str, LayerSubject] = {
    "DropBlock1D": LayerSubject(
        lambda: optsuite_layers.DropBlock1D(0.25, block_size=3, seed=3), (10, 2), True,
        expectation=_dropblock_expectation, draws=1000,
    ),
    "DropBlock2D": LayerSubject(
        lambda: optsuite_layers.DropBlock2D(0.25, block_size=3, seed=3), (6, 6, 2), True,
        expectation=_dropblock_expectation, draws=1000,
    ),
    "StochasticDepth": LayerSubject(
        lambda: optsuite_layers.StochasticDepth(0.75, seed=3), (6,), True,
        _stochastic_depth_inference, residual_pair=True, draws=1000,
    ),
    "DropPath": LayerSubject(lambda: optsuite_layers.DropPath(0.25, seed=3), (4, 3), True),
    "DropConnect": LayerSubject(
        lambda: optsuite_layers.DropConnect(keras.layers.Dense(4), rate=0.25, seed=3), (5,), True,
        _dense_inference, draws=1000,
    ),
    "WeightNormalization": LayerSubject(
        lambda: optsuite_layers.WeightNormalization(keras.layers.Dense(4), data_init=True), (5,), False,
    ),
    "BatchRenormalization": LayerSubject(
        lambda: optsuite_layers.BatchRenormalization(
            r_max=Ramp(1.0, 3.0, start_step=1, end_step=5), d_max=0.5, momentum=0.5
        ),
        (4, 3), False,
    ),
    "GhostBatchNormalization": LayerSubject(
        lambda: optsuite_layers.GhostBatchNormalization(virtual_batch_size=4, momentum=0.5), (4, 3), False,
    ),
}

# Registered layers the model-level contract does not apply to, and why.
NOT_MODEL_LAYERS = {
    "MixUp": "mixes (x, y) batches in the data pipeline; tests/test_mixing.py",
    "CutMix": "mixes (x, y) batches in the data pipeline; tests/test_mixing.py",
}

STOCHASTIC = [name for name, subject in SUBJECTS.items() if subject.stochastic]


def test_every_registered_layer_has_a_contract_row_or_a_reason():
    assert set(SUBJECTS) | set(NOT_MODEL_LAYERS) == set(LAYERS)
    assert not set(SUBJECTS) & set(NOT_MODEL_LAYERS)
    for name, subject in SUBJECTS.items():
        assert type(subject.make()) is LAYERS[name].cls


# -- helpers ---------------------------------------------------------------------------
def _inputs(subject: LayerSubject, seed: int = 0, batch: int = BATCH):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, *subject.input_shape)).astype("float32")
    if subject.residual_pair:
        return [x, rng.normal(size=x.shape).astype("float32")]
    return x


def _model(subject: LayerSubject, layer: keras.layers.Layer | None = None) -> keras.Model:
    """Input -> the layer -> Flatten -> Dense(3): something to train around it."""
    layer = layer or subject.make()
    inputs = keras.Input(subject.input_shape)
    if subject.residual_pair:
        branch = keras.layers.Dense(subject.input_shape[-1], name="branch")(inputs)
        hidden = layer([inputs, branch])
    else:
        hidden = layer(inputs)
    outputs = keras.layers.Dense(3, name="head")(keras.layers.Flatten()(hidden))
    return keras.Model(inputs, outputs)


def _data(subject: LayerSubject, examples: int = 64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(examples, *subject.input_shape)).astype("float32")
    y = rng.normal(size=(examples, 3)).astype("float32")
    return x, y


def _expected_inference(subject, inputs, layer):
    if subject.inference is None:
        return np.asarray(inputs)
    return subject.inference(inputs, layer)


# -- stochastic layers: inference rule and expectation ----------------------------------
@pytest.mark.parametrize("name", STOCHASTIC)
def test_inference_follows_the_method(name):
    subject = SUBJECTS[name]
    layer = subject.make()
    inputs = _inputs(subject)
    expected = _expected_inference(subject, inputs, _built(layer, inputs))
    for training in (False, None):
        np.testing.assert_allclose(np.asarray(layer(inputs, training=training)), expected, rtol=1e-6, atol=1e-6)


def _built(layer, inputs):
    layer(inputs, training=False)
    return layer


@pytest.mark.parametrize("name", STOCHASTIC)
def test_training_outputs_average_to_the_expected_output(name):
    """A z-test per element: |mean - expected| < 5 standard errors, over `draws` draws.

    With a few hundred elements the largest |z| of a correct layer is about
    3.5; a layer that forgets its rescaling (mean off by the keep
    probability) is off by tens of standard errors.
    """
    subject = SUBJECTS[name]
    layer = subject.make()
    inputs = _inputs(subject)
    _built(layer, inputs)
    if subject.expectation is not None:
        expected = subject.expectation(inputs, layer)
    else:
        expected = _expected_inference(subject, inputs, layer)
    call = tf.function(lambda x: layer(x, training=True))
    draws = np.stack([np.asarray(call(inputs)) for _ in range(subject.draws)]).astype("float64")
    mean, spread = draws.mean(axis=0), draws.std(axis=0)
    assert np.any(spread > 0), "training outputs never vary: nothing is dropped"
    standard_error = spread / np.sqrt(subject.draws)
    z = np.abs(mean - expected) / np.maximum(standard_error, 1e-6)
    assert z.max() < 5.0, f"largest z = {z.max():.2f}"


# -- every layer ---------------------------------------------------------------------
@pytest.mark.parametrize("name", list(SUBJECTS))
def test_mixed_float16_output_dtype_and_shape(name):
    subject = SUBJECTS[name]
    inputs = _data(subject)[0][:BATCH]  # the model's input
    reference_shape = _model(subject).layers[-3].output.shape  # float32 policy
    keras.config.set_dtype_policy("mixed_float16")
    model = _model(subject)
    layer = model.layers[-3]
    assert layer.compute_dtype == "float16"
    probe = keras.Model(model.inputs, layer.output)
    for training in (True, False):
        outputs = probe(inputs, training=training)
        assert outputs.dtype == tf.float16
        assert tuple(outputs.shape)[1:] == tuple(reference_shape)[1:]
        assert np.all(np.isfinite(np.asarray(outputs)))
    model.compile(optimizer="adam", loss="mse")
    history = model.fit(*_data(subject), batch_size=BATCH, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


@pytest.mark.parametrize("name", list(SUBJECTS))
def test_keras_round_trip_keeps_config_and_state(name, tmp_path):
    subject = SUBJECTS[name]
    model = _model(subject)
    model.compile(optimizer="adam", loss="mse")
    model.fit(*_data(subject), batch_size=BATCH, epochs=1, verbose=0)  # moves the state
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    layer, loaded_layer = model.layers[-3], loaded.layers[-3]
    assert type(loaded_layer) is type(layer)
    as_saved = lambda config: json.loads(json.dumps(config))  # noqa: E731 (tuples -> lists)
    assert as_saved(loaded_layer.get_config()) == as_saved(layer.get_config())
    # Weights, not variables: like Keras's own Dropout, seed-generator states
    # are not saved (a loaded model restarts its random stream from `seed`).
    assert len(loaded.weights) == len(model.weights)
    for original, restored in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(np.asarray(restored), np.asarray(original), err_msg=original.path)
    x, _ = _data(subject)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(SUBJECTS))
def test_jit_compile_matches_eager_and_trains(name):
    subject = SUBJECTS[name]
    model = _model(subject)
    layer = model.layers[-3]
    inputs = _inputs(subject)
    eager = np.asarray(layer(inputs, training=False))
    compiled = tf.function(lambda x, training: layer(x, training=training), jit_compile=True, reduce_retracing=False)
    np.testing.assert_allclose(np.asarray(compiled(inputs, False)), eager, rtol=1e-5, atol=1e-5)
    state = [np.asarray(v) for v in model.variables]
    eager_training = np.asarray(layer(inputs, training=True))
    for variable, value in zip(model.variables, state):
        variable.assign(value)
    jit_training = np.asarray(compiled(inputs, True))
    if subject.stochastic:
        assert np.all(np.isfinite(jit_training)) and not np.allclose(jit_training, eager)
    else:
        np.testing.assert_allclose(jit_training, eager_training, rtol=1e-5, atol=1e-5)
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    before = [np.asarray(v) for v in model.trainable_variables]
    history = model.fit(*_data(subject), batch_size=BATCH, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert all(not np.array_equal(a, np.asarray(b)) for a, b in zip(before, model.trainable_variables))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SUBJECTS))
def test_mirrored_strategy_keeps_replicas_identical(name):
    subject = SUBJECTS[name]
    # ReductionToOneDevice: a second default MirroredStrategy in one process
    # reuses collective keys and fails on other shapes (a TensorFlow bug).
    strategy = mirrored_strategy()
    with strategy.scope():
        model = _model(subject)
        model.compile(optimizer="adam", loss="mse")
    x, y = _data(subject)
    history = model.fit(x, y, batch_size=2 * BATCH, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    for variable in model.variables:
        replicas = [np.asarray(v) for v in variable.value.values]
        assert len(replicas) == 2
        np.testing.assert_array_equal(replicas[0], replicas[1], err_msg=variable.path)
    single = _model(subject)
    single.set_weights(model.get_weights())
    np.testing.assert_allclose(single.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)
