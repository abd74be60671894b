"""DropoutScheduler sets rates from a schedule, and the rate set is the rate applied.

The applied rate is read back from the loss, through a closed form: a model
``ones(D) -> dropout(r) -> sum`` with target 0 has mean squared error
``E[(sum_i m_i / (1 - r))^2] = D^2 + D r / (1 - r)``, so each epoch's loss
tells which rate the compiled train function actually used.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from keras_optsuite.callbacks import DropoutScheduler
from keras_optsuite.layers import DropPath
from keras_optsuite.schedules import Ramp

D = 4
EXAMPLES = 8192
BATCH = 256  # 32 steps per epoch


def _loss_at(rate: float) -> float:
    return D**2 + D * rate / (1 - rate)


def _within_five_standard_errors(loss: float, rate: float) -> bool:
    """The epoch loss is a mean of ``out^2`` over EXAMPLES examples; ``out`` has
    mean D and standard deviation ``sqrt(D r / (1 - r))``, so ``out^2`` has
    a standard deviation of about ``2 D sqrt(D r / (1 - r))``. At r = 0.25
    the expected losses of neighbouring rates are ~13 standard errors apart.
    """
    standard_error = 2 * D * np.sqrt(D * rate / (1 - rate)) / np.sqrt(EXAMPLES)
    return abs(loss - _loss_at(rate)) < 5 * standard_error


def _dropout_model(dropout: keras.layers.Layer) -> keras.Model:
    inputs = keras.Input((D,))
    # Trainable (so the optimizer counts steps) but frozen by a learning rate of 0.
    summed = keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")
    model = keras.Model(inputs, summed(dropout(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return model


def _fit(model, callback, epochs):
    x = np.ones((EXAMPLES, D), "float32")
    y = np.zeros((EXAMPLES, 1), "float32")
    return model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=[callback]).history


def test_epoch_schedule_on_keras_dropout_rebuilds_the_train_function():
    # Keras's Dropout draws nothing when built at rate 0: build it at the final rate.
    dropout = keras.layers.Dropout(0.5, seed=1)
    model = _dropout_model(dropout)
    ramp = DropoutScheduler(Ramp(0.0, 0.5, start_step=0, end_step=2))  # epochs: 0, 0.25, 0.5
    history = _fit(model, ramp, epochs=3)
    assert history["dropout.rate"] == [0.0, 0.25, 0.5]
    assert history["loss"][0] == pytest.approx(_loss_at(0.0), rel=1e-6)  # nothing dropped
    assert _within_five_standard_errors(history["loss"][1], 0.25)
    assert _within_five_standard_errors(history["loss"][2], 0.5)


def test_batch_schedule_on_our_layer_follows_the_optimizer_step():
    layer = DropPath(0.0, seed=4)
    model = _dropout_model(layer)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(layer.rate)

    ramp = DropoutScheduler(Ramp(0.0, 0.5, start_step=2, end_step=6), frequency="batch")
    x = np.ones((10 * 8, D), "float32")
    model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0, callbacks=[ramp, Record()])
    assert seen == [0.0, 0.0, 0.0, 0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.5]


def test_batch_schedule_applies_without_retracing():
    """Rates in variables: the ramp reaches the compiled function with one trace."""
    layer = DropPath(0.0, seed=4)
    model = _dropout_model(layer)
    ramp = DropoutScheduler(lambda step: 0.5 if step >= 32 else 0.0, frequency="batch")
    history = _fit(model, ramp, epochs=2)  # the second epoch at rate 0.5
    function = model.train_function
    assert history["loss"][0] == pytest.approx(_loss_at(0.0), rel=1e-6)
    # DropPath drops whole examples: out^2 is 0 or 4 D^2, the loss D^2 / (1 - r)
    # = 2 D^2 with a relative standard error of 1 / sqrt(EXAMPLES) ~ 1.1%.
    assert history["loss"][1] == pytest.approx(2 * D**2, rel=5 / np.sqrt(EXAMPLES))
    assert model.train_function is function
    assert history["drop_path.rate"] == [0.0, 0.5]


def test_resumed_training_continues_the_ramp_from_the_optimizer_step():
    layer = DropPath(0.0)
    model = _dropout_model(layer)
    model.optimizer.iterations.assign(40)
    ramp = DropoutScheduler(Ramp(0.0, 0.5, end_step=160), frequency="batch", layers=[DropPath])
    _fit(model, ramp, epochs=1)
    assert layer.rate == pytest.approx(0.5 * 71 / 160)  # 32 batches: the last starts at step 71


def test_frequency_batch_refuses_rates_frozen_into_the_train_function():
    model = _dropout_model(keras.layers.Dropout(0.1))
    with pytest.raises(ValueError, match=r"frequency='batch'.*\['dropout'\]"):
        _fit(model, DropoutScheduler(lambda step: 0.1, frequency="batch"), epochs=1)


def test_keras_dropout_built_at_rate_0_is_refused_with_the_fix():
    model = _dropout_model(keras.layers.Dropout(0.0))
    with pytest.raises(ValueError, match=r"rate=0.*final rate"):
        _fit(model, DropoutScheduler(lambda step: 0.1), epochs=1)


def test_selecting_layers_by_name_class_or_object():
    first, second = DropPath(0.0, name="first"), DropPath(0.0, name="second")
    inputs = keras.Input((D,))
    model = keras.Model(inputs, second(first(inputs)))
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    for selector in ("second", second):
        first.rate = second.rate = 0.0
        _fit(model, DropoutScheduler(lambda step: 0.25, layers=[selector]), epochs=1)
        assert (first.rate, second.rate) == (0.0, 0.25)
    _fit(model, DropoutScheduler(lambda step: 0.125, layers=[DropPath]), epochs=1)
    assert (first.rate, second.rate) == (0.125, 0.125)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"schedule": 0.1}, "schedule"),
        ({"schedule": lambda s: 0.1, "frequency": "step"}, "frequency"),
        ({"schedule": lambda s: 0.1, "attribute": "not an attribute"}, "attribute"),
        ({"schedule": lambda s: 0.1, "layers": "dropout"}, "layers"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        DropoutScheduler(**kwargs)


def test_a_schedule_value_out_of_range_names_the_attribute():
    model = _dropout_model(DropPath(0.0))
    with pytest.raises(ValueError, match="rate must be in"):
        _fit(model, DropoutScheduler(lambda step: 1.5), epochs=1)


def test_no_matching_layer_is_an_error_naming_the_attribute():
    model = _dropout_model(DropPath(0.0))
    with pytest.raises(ValueError, match="survival_probability"):
        _fit(model, DropoutScheduler(lambda step: 0.5, attribute="survival_probability"), epochs=1)
