"""SAM, ASAM and GSAM through plain ``model.fit`` (the closure train step).

The numerics compare whole ``fit`` steps of a float64 linear regression,
whose gradient is analytic, with the NumPy references in
``tests/references/sam.py``: every step evaluates the gradient at ``w`` and
at the perturbed weights, so a wrong perturbation, a wrong direction or a
closure evaluated at the wrong weights changes the trajectory.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LOSS, assert_weights_close, dense_model, mirrored_strategy
from references import sam as sam_reference

from keras_optsuite.optimizers import ASAM, GSAM, LBFGS, SAM, AdaHessian, GradientAccumulation, Sophia
from keras_optsuite.optimizers.closure import (
    APPLIED,
    ClosureRequiredError,
    apply_with_closure,
    closure_train_step,
    enable_closure_train_step,
)

LR = 2.0**-3
# The loss in float64 (Keras's default loss dtype float32 would round the residuals).
_MSE = keras.losses.MeanSquaredError(dtype="float64")
STEPS = 3
METHODS = {
    "SAM": (SAM, {"rho": 0.25}),
    "ASAM": (ASAM, {"rho": 0.5, "eta": 0.125}),
    "GSAM": (GSAM, {"rho": 0.25, "alpha": 0.5}),
}


def _regression(seed=0, n=16):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = x @ rng.normal(size=(3, 1)) + 0.3 * rng.normal(size=(n, 1))
    weights = [rng.normal(size=(3, 1)), rng.normal(size=(1,))]
    # fit() hands float data to the model in float32: use values float32 holds exactly.
    return _float32_exact(x), _float32_exact(y), weights


def _float32_exact(values):
    return values.astype(np.float32).astype(np.float64)


def _mse_gradient(x, y, sample_weight):
    """Keras's ``mse`` with ``sum_over_batch_size``: mean_i s_i (x_i w + b - y_i)^2."""
    s = np.ones((len(x), 1)) if sample_weight is None else sample_weight.reshape(-1, 1)

    def gradient_at(params):
        w, b = params
        residual = x @ w + b - y
        return [2.0 * x.T @ (s * residual) / len(x), 2.0 * np.sum(s * residual, axis=0) / len(x)]

    def loss_at(params):
        w, b = params
        return float(np.mean(s * (x @ w + b - y) ** 2))

    return gradient_at, loss_at


class Regressor(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(1, dtype="float64")

    def call(self, inputs):
        return self.dense(inputs)


class ManualStep(Regressor):
    """Overrides train_step the way Keras's guide does (gradients only)."""

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True))
        self.optimizer.apply(tape.gradient(loss, self.trainable_variables), self.trainable_variables)
        return {"loss": loss}


class HelperStep(Regressor):
    def train_step(self, data):
        return closure_train_step(self, data)


def _model(kind):
    if kind == "sequential":
        return keras.Sequential([keras.Input((3,), dtype="float64"), keras.layers.Dense(1, dtype="float64")])
    if kind == "functional":
        inputs = keras.Input((3,), dtype="float64")
        return keras.Model(inputs, keras.layers.Dense(1, dtype="float64")(inputs))
    model = {"subclassed": Regressor, "manual": ManualStep, "helper": HelperStep}[kind]()
    model(np.zeros((1, 3)))
    return model


def _fit_and_compare(kind, method, sample_weight=None):
    x, y, init = _regression()
    cls, hyper = METHODS[method]
    model = _model(kind)
    model.set_weights(init)
    model.compile(optimizer=cls(keras.optimizers.SGD(LR), **hyper), loss=_MSE, metrics=["mae"])
    history = model.fit(
        x, y, sample_weight=sample_weight, batch_size=len(x), epochs=STEPS, shuffle=False, verbose=0
    ).history

    gradient_at, loss_at = _mse_gradient(x, y, sample_weight)
    reference = getattr(sam_reference, method)(sam_reference.SGD(LR), **hyper)
    params, losses, maes = [p.copy() for p in init], [], []
    for _ in range(STEPS):
        losses.append(loss_at(params))
        maes.append(float(np.mean(np.abs(x @ params[0] + params[1] - y))))
        params = reference.step(params, gradient_at)
    for got, want in zip(model.get_weights(), params):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12, err_msg=f"{kind} {method}")
    # Loss and metrics are reported once per step, from the pass at w (not w + eps).
    np.testing.assert_allclose(history["loss"], losses, rtol=1e-6)
    np.testing.assert_allclose(history["mae"], maes, rtol=1e-6)
    # Not trivially equal to plain SGD: the perturbation changed the step.
    sgd = [p.copy() for p in init]
    for _ in range(STEPS):
        sgd = [p - LR * g for p, g in zip(sgd, gradient_at(sgd))]
    assert max(np.abs(a - b).max() for a, b in zip(params, sgd)) > 1e-3


def test_closure_train_step_is_installed_on_import():
    assert enable_closure_train_step() == {"train_step": APPLIED}
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    # Other optimizers still run Keras's own step (the one wrapped here).
    assert TensorFlowTrainer.train_step.__wrapped__.__module__.startswith("keras.")


@pytest.mark.parametrize("method", list(METHODS))
def test_fit_steps_match_the_numpy_reference(method):
    _fit_and_compare("sequential", method)


@pytest.mark.parametrize("kind", ["functional", "subclassed", "helper"])
def test_functional_subclassed_and_custom_train_step_with_helper(kind):
    _fit_and_compare(kind, "GSAM")


def test_sample_weights_are_respected():
    sample_weight = _float32_exact(np.linspace(0.0, 2.0, 16))
    _fit_and_compare("sequential", "SAM", sample_weight=sample_weight)


def test_apply_without_a_closure_raises_and_names_the_fix():
    variable = keras.Variable(np.zeros(3))
    with pytest.raises(ClosureRequiredError, match=r"ASAM.*closure_train_step\(self, data\)"):
        ASAM(keras.optimizers.SGD()).apply([tf.ones(3)], [variable])
    np.testing.assert_array_equal(variable.numpy(), 0.0)

    x, y, init = _regression()
    model = _model("manual")
    model.compile(optimizer=SAM(keras.optimizers.SGD(LR)), loss="mse")
    with pytest.raises(ClosureRequiredError, match="closure_train_step"):
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_per_output_loss_trackers_count_the_pass_at_w_only():
    x, y, _ = _regression()
    inputs = keras.Input((3,), dtype="float64")
    outputs = [keras.layers.Dense(1, dtype="float64", name=n)(inputs) for n in ("first", "second")]
    model = keras.Model(inputs, outputs)
    initial = model.get_weights()
    model.compile(optimizer=SAM(keras.optimizers.SGD(LR), rho=0.25), loss=[_MSE, _MSE])
    history = model.fit(x, [y, 2.0 * y], batch_size=16, epochs=1, verbose=0).history
    want = [
        float(np.mean((x @ initial[0] + initial[1] - y) ** 2)),
        float(np.mean((x @ initial[2] + initial[3] - 2.0 * y) ** 2)),
    ]
    np.testing.assert_allclose([history["first_loss"][0], history["second_loss"][0]], want, rtol=1e-6)
    np.testing.assert_allclose(history["loss"][0], sum(want), rtol=1e-6)


def test_gradient_accumulation_around_a_closure_optimizer_is_rejected():
    variable = keras.Variable(np.ones(3))

    def closure():
        return [tf.ones(3, dtype="float64")], None

    wrapped = GradientAccumulation(SAM(keras.optimizers.SGD()), steps=2)
    with pytest.raises(ValueError, match="GradientAccumulation around"):
        apply_with_closure(wrapped, closure()[0], [variable], closure)
    np.testing.assert_array_equal(variable.numpy(), 1.0)


def test_apply_with_closure_in_a_custom_loop_matches_the_reference():
    x, y, init = _regression()
    variables = [keras.Variable(p) for p in init]
    optimizer = GSAM(keras.optimizers.SGD(LR), rho=0.25, alpha=0.5)

    def closure():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(tf.constant(x) @ variables[0] + variables[1] - y))
        return tape.gradient(loss, variables), loss

    gradient_at, _ = _mse_gradient(x, y, None)
    reference = sam_reference.GSAM(sam_reference.SGD(LR), rho=0.25, alpha=0.5)
    params = init
    for _ in range(STEPS):
        optimizer.apply_with_closure(closure()[0], variables, closure)
        params = reference.step(params, gradient_at)
    for got, want in zip(variables, params):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-9)


@pytest.mark.slow
def test_mixed_float16_trains_and_matches_float32_roughly(digits):
    x, y = digits[0][:512], digits[1][:512]
    results = {}
    for policy in ("float32", "mixed_float16"):
        keras.config.set_dtype_policy(policy)
        model = dense_model()
        model.compile(optimizer=SAM(keras.optimizers.SGD(0.5), rho=0.05), loss=LOSS)
        if policy == "mixed_float16":
            assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        history = model.fit(x, y, batch_size=64, epochs=3, shuffle=False, verbose=0).history["loss"]
        assert all(np.isfinite(history)) and history[-1] < 0.7 * history[0], (policy, history)
        results[policy] = (history, model.get_weights())
    np.testing.assert_allclose(results["mixed_float16"][0], results["float32"][0], rtol=0.02)
    for a, b in zip(results["mixed_float16"][1], results["float32"][1]):
        np.testing.assert_allclose(a, b, atol=0.02)


@pytest.mark.slow
def test_mirrored_strategy_on_two_devices_matches_one_device(digits):
    x, y = digits[0][:256], digits[1][:256]

    def optimizer():
        return GSAM(keras.optimizers.SGD(0.25, momentum=0.5), rho=0.1, alpha=0.5)

    single = dense_model()
    initial = single.get_weights()
    single.compile(optimizer=optimizer(), loss=LOSS)
    single_loss = single.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0).history["loss"]

    strategy = mirrored_strategy()
    with strategy.scope():
        mirrored = dense_model()
        mirrored.set_weights(initial)
        mirrored.compile(optimizer=optimizer(), loss=LOSS)
    mirrored_loss = mirrored.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0).history["loss"]

    assert mirrored.optimizer.iterations.numpy() == single.optimizer.iterations.numpy() == 8
    np.testing.assert_allclose(mirrored_loss, single_loss, rtol=1e-5)
    assert_weights_close(mirrored, single, rtol=1e-4, atol=1e-5)
    # Both replicas' copies hold the same (restored, then updated) weights.
    for variable in mirrored.trainable_variables:
        copies = [v.numpy() for v in variable.value.values]
        assert len(copies) == 2
        for other in copies[1:]:
            np.testing.assert_array_equal(other, copies[0])


def test_sparse_embedding_gradients_match_their_dense_equivalent():
    """An Embedding (IndexedSlices gradients) equals a Dense layer on one-hot inputs."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 20, size=(64, 5)).astype("int32")
    targets = rng.normal(size=(64, 1)).astype("float32")
    keras.utils.set_random_seed(3)
    embedding = keras.Sequential([
        keras.Input((5,), dtype="int32"), keras.layers.Embedding(20, 4),
        keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1),
    ])
    one_hot = keras.Sequential([
        keras.Input((5, 20)), keras.layers.Dense(4, use_bias=False),
        keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1),
    ])
    one_hot.set_weights(embedding.get_weights())
    initial = embedding.get_weights()
    for model, x in ((embedding, tokens), (one_hot, np.eye(20, dtype="float32")[tokens])):
        model.compile(optimizer=ASAM(keras.optimizers.Adam(0.01), rho=0.5), loss="mse")
        model.fit(x, targets, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert_weights_close(embedding, one_hot, rtol=1e-5, atol=1e-6)
    assert np.abs(embedding.get_weights()[0] - initial[0]).max() > 1e-3


@pytest.mark.parametrize(
    "cls,name,value",
    [(SAM, "rho", 0.0), (SAM, "rho", -1.0), (SAM, "rho", float("nan")), (ASAM, "eta", -0.1),
     (GSAM, "alpha", -0.5), (GSAM, "rho", "0.05")],
)
def test_invalid_arguments_raise_value_error_naming_the_argument(cls, name, value):
    with pytest.raises(ValueError, match=name):
        cls(keras.optimizers.SGD(), **{name: value})


def _bn_first_model():
    keras.utils.set_random_seed(5)
    return keras.Sequential([
        keras.Input((4,)),
        keras.layers.BatchNormalization(momentum=0.5),
        keras.layers.Dense(8, activation="tanh"),
        keras.layers.Dropout(0.25),
        keras.layers.Dense(3),
    ])


@pytest.mark.parametrize(
    "make",
    [
        lambda: SAM(keras.optimizers.Adam(0.01), rho=0.05),
        lambda: AdaHessian(0.01),
        lambda: Sophia(0.01, estimator="hutchinson", hessian_update_interval=1),
        lambda: LBFGS(max_evaluations=6),
    ],
    ids=["SAM", "AdaHessian", "Sophia", "LBFGS"],
)
def test_extra_passes_leave_batch_normalization_statistics_as_one_pass_leaves_them(make):
    """BatchNormalization first: its moving statistics depend on the data only.

    Keras's update per step is ``moving = momentum * moving + (1 - momentum) *
    batch_statistic`` (variance: the batch's biased variance); SAM's second
    pass, a Hessian-vector product or line-search trials must not apply it
    again.
    """
    rng = np.random.default_rng(4)
    x = rng.normal(loc=2.0, scale=3.0, size=(48, 4)).astype("float32")
    y = rng.integers(0, 3, size=48)
    model = _bn_first_model()
    model.compile(optimizer=make(), loss=LOSS)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)

    mean, variance = np.zeros(4), np.ones(4)
    for batch in np.split(x.astype(np.float64), 3):
        mean = 0.5 * mean + 0.5 * batch.mean(axis=0)
        variance = 0.5 * variance + 0.5 * batch.var(axis=0)
    bn = model.layers[0]
    np.testing.assert_allclose(bn.moving_mean.numpy(), mean, rtol=1e-5)
    np.testing.assert_allclose(bn.moving_variance.numpy(), variance, rtol=1e-5)
    assert int(model.optimizer.iterations) == 3
