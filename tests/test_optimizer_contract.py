"""The contract every registered optimizer and wrapper honours.

Two tables (``REGISTRY`` and ``WRAPPERS`` in ``keras_optsuite.optimizers``)
list what we ship; ``subjects.py`` turns them into test subjects (each
wrapper around a built-in Keras optimizer and around one of ours) and every
test here runs on every subject. A new optimizer or wrapper joins by adding
its registry row and its NumPy reference in ``tests/references/``: no new
test code.
"""

from __future__ import annotations

import copy

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LOSS, assert_weights_close, dense_model, mirrored_strategy

from subjects import AT_DEFAULTS, SUBJECTS, TRAINING_SUBJECTS

from keras_optsuite.optimizers import LearningRateFree, iter_optimizers

by_name = pytest.mark.parametrize("subject", SUBJECTS, ids=[s.id for s in SUBJECTS])
# Whole-model training checks: every optimizer, wrappers around Keras's Adam (see subjects.py).
by_training_name = pytest.mark.parametrize(
    "subject", TRAINING_SUBJECTS, ids=[s.id for s in TRAINING_SUBJECTS]
)
# The float32 comparisons (XLA, MirroredStrategy) also run Shampoo, SOAP and
# AdaHessian at their default safeguards (subjects.AT_DEFAULTS).
by_comparison_name = pytest.mark.parametrize(
    "subject", TRAINING_SUBJECTS + AT_DEFAULTS, ids=[s.id for s in TRAINING_SUBJECTS + AT_DEFAULTS]
)

# Checks a method may be excluded from (subjects.EXCLUSIONS), because
# its defined behaviour differs on purpose; its own test module covers it.
EXCLUDABLE_CHECKS = (
    "sparse_matches_dense",
    # Checks that step with apply(gradients) alone: an optimizer that needs a
    # closure (the SAM family) raises there by design.
    "paper_update_rule", "convex_quadratic", "schedule", "weight_decay", "norm_clipping",
    "clipvalue",
)


def applicable(check: str):
    """Parametrize over the subjects the check applies to."""
    assert check in EXCLUDABLE_CHECKS
    chosen = [s for s in SUBJECTS if check not in s.exclusions]
    return pytest.mark.parametrize("subject", chosen, ids=[s.id for s in chosen])

# Exactly representable in float32, so the learning rate Keras keeps in a
# float32 variable is the same number the float64 reference uses.
EXACT_LR = 2.0**-5
STEPS = 30


def _numeric_cases():
    for subject in SUBJECTS:
        if "paper_update_rule" in subject.exclusions:
            continue
        for i, hyper in enumerate(subject.numeric_cases):
            yield pytest.param(subject, hyper, id=f"{subject.id}-{i}" if i else f"{subject.id}-defaults")


def _apply(optimizer, grads, variables, repeats=1):
    """One weight update: ``repeats`` calls for an optimizer that accumulates micro-steps."""
    for _ in range(repeats):
        optimizer.apply([tf.constant(g) for g in grads], variables)


def _innermost(optimizer):
    return list(iter_optimizers(optimizer))[-1]


def _innermost_config(config):
    while "inner" in config:
        config = config["inner"]["config"]
    return config


def _quadratic_problem(seed: int = 0):
    """Two parameters (a matrix and a bias-like vector) of a noisy quadratic.

    The gradient at step t is ``curvature * (x - target) + noise[t]``: it
    depends on the trajectory, so an update rule that is wrong at step k
    changes every later gradient.
    """
    rng = np.random.default_rng(seed)
    shapes = [(4, 3), (3,)]
    init = [rng.normal(size=s) for s in shapes]
    target = [rng.normal(size=s) for s in shapes]
    curvature = [rng.uniform(0.5, 4.0, size=s) for s in shapes]
    noise = [[0.1 * rng.normal(size=s) for s in shapes] for _ in range(STEPS)]

    def gradient(values, step):
        return [c * (x - tgt) + n for x, tgt, c, n in zip(values, target, curvature, noise[step])]

    return init, gradient


def _same_weights(model, reference_model):
    model.set_weights(reference_model.get_weights())
    return model




# ---------------------------------------------------------------------------
# Numerics: the implementation follows the paper's update rule.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("subject,hyper", list(_numeric_cases()))
def test_30_steps_match_the_papers_update_rule_in_float64(subject, hyper):
    init, gradient = _quadratic_problem()
    # A learning-rate-free method's learning rate multiplies its own estimate: 1 is its default.
    lr = 1.0 if issubclass(subject.cls, LearningRateFree) else EXACT_LR

    variables = [keras.Variable(x, dtype="float64") for x in init]
    optimizer = subject.build(hyper, learning_rate=lr)
    reference = subject.reference(hyper, lr)
    expected = [np.array(x) for x in init]

    for step in range(STEPS):
        grads = gradient([v.numpy() for v in variables], step)
        optimizer.apply([tf.constant(g) for g in grads], variables)
        expected = reference.step(expected, gradient(expected, step))
        for variable, want in zip(variables, expected):
            np.testing.assert_allclose(
                variable.numpy(), want, rtol=1e-9, atol=1e-12,
                err_msg=f"{subject}{hyper} diverges from the paper at step {step + 1}",
            )
        if getattr(reference, "averages", None) is not None:
            for average, want in zip(optimizer.averaged_variables, reference.averages):
                np.testing.assert_allclose(
                    average.numpy(), want, rtol=1e-9, atol=1e-12,
                    err_msg=f"{subject}{hyper}: wrong weight average after step {step + 1}",
                )
    # The trajectory really moved: the comparison is not between two copies of init.
    assert max(np.abs(v.numpy() - x).max() for v, x in zip(variables, init)) > 1e-3
    if hasattr(reference, "averages"):
        assert reference.averages is not None, "the averaging schedule was exercised"


# ---------------------------------------------------------------------------
# Convergence.
# ---------------------------------------------------------------------------
@applicable("convex_quadratic")
def test_reduces_a_convex_quadratic(subject):
    rng = np.random.default_rng(1)
    curvature = tf.constant(rng.uniform(1.0, 10.0, size=20), tf.float32)
    target = tf.constant(rng.uniform(-0.5, 0.5, size=20), tf.float32)
    x = keras.Variable(np.zeros(20, "float32"))

    def loss():
        return 0.5 * tf.reduce_sum(curvature * tf.square(x - target))

    optimizer = subject.create()
    initial = float(loss())

    @tf.function  # one trace instead of 300 eager steps (each op dispatched from Python)
    def descend():
        for _ in tf.range(300):
            with tf.GradientTape() as tape:
                value = loss()
            optimizer.apply(tape.gradient(value, [x]), [x])

    descend()
    # AdEMAMix's slow average (half-life ~7000 steps) overshoots on a
    # noiseless quadratic, so the bar is a 4x reduction, not convergence.
    assert float(loss()) < 0.25 * initial


@by_training_name
@pytest.mark.slow
def test_fits_digits_logistic_regression_to_90_percent(subject, digits):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(optimizer=subject.create(), loss=LOSS, metrics=["accuracy"])
    # Micro-batches of an accumulating optimizer add up to the same 64 samples per update.
    model.fit(x, y, batch_size=64 // subject.micro_steps, epochs=20, verbose=0)
    _, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy >= 0.90


# ---------------------------------------------------------------------------
# Serialization.
# ---------------------------------------------------------------------------
@by_name
def test_config_round_trip_and_compile_by_name_or_config(subject, digits):
    optimizer = subject.create(weight_decay=0.0625)
    config = optimizer.get_config()
    rebuilt = subject.cls.from_config(copy.deepcopy(config))
    assert rebuilt.get_config() == config

    x, y = digits
    model = dense_model()
    if subject.registered_name:
        model.compile(optimizer=subject.registered_name, loss=LOSS)
    else:  # a wrapper needs its inner optimizer: compile from the serialized form
        model.compile(optimizer=keras.optimizers.serialize(subject.create()), loss=LOSS)
    assert type(model.optimizer) is subject.cls
    before = model.get_weights()
    # Six updates: ADOPT's first step only initializes its second moment and
    # ScheduleFreeRAdam takes no step while its variance is intractable (5 steps).
    model.fit(x[:384], y[:384], batch_size=64 // subject.micro_steps, epochs=1, verbose=0)
    assert any(not np.array_equal(b, a) for b, a in zip(before, model.get_weights()))


@by_name
def test_save_load_keeps_state_and_resumed_training_matches(subject, digits, tmp_path):
    x, y = digits
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 320, 32)]

    uninterrupted = dense_model()
    uninterrupted.compile(optimizer=subject.create(), loss=LOSS)
    for xb, yb in batches:
        uninterrupted.train_on_batch(xb, yb)

    model = dense_model()
    model.compile(optimizer=subject.create(), loss=LOSS)
    for xb, yb in batches[:5]:
        model.train_on_batch(xb, yb)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    assert type(loaded.optimizer) is subject.cls
    assert int(loaded.optimizer.iterations) == 5
    saved_state = [v.numpy() for v in model.optimizer.variables]
    loaded_state = [v.numpy() for v in loaded.optimizer.variables]
    assert len(saved_state) == len(loaded_state)
    for a, b in zip(saved_state, loaded_state):
        np.testing.assert_array_equal(a, b)

    for xb, yb in batches[5:]:
        loaded.train_on_batch(xb, yb)
    assert_weights_close(loaded, uninterrupted, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------
# Base-class options: schedules, decoupled weight decay, clipping.
# ---------------------------------------------------------------------------
@applicable("schedule")
def test_learning_rate_schedule_is_read_at_every_step(subject):
    """A schedule gives the same trajectory as setting its value by hand."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        EXACT_LR, decay_steps=1, decay_rate=0.5
    )
    init, gradient = _quadratic_problem()
    scheduled = subject.build(learning_rate=schedule)
    manual = subject.build(learning_rate=EXACT_LR)
    a = [keras.Variable(v, dtype="float64") for v in init]
    b = [keras.Variable(v, dtype="float64") for v in init]
    for step in range(8):
        manual.learning_rate = EXACT_LR * 0.5**step
        _apply(scheduled, gradient([v.numpy() for v in a], step), a, subject.micro_steps)
        _apply(manual, gradient([v.numpy() for v in b], step), b, subject.micro_steps)
        for va, vb in zip(a, b):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-12, atol=1e-15)
    assert float(scheduled.learning_rate) == pytest.approx(EXACT_LR * 0.5**8)
    config = scheduled.get_config()
    assert _innermost_config(config)["learning_rate"]["class_name"] == "ExponentialDecay"
    assert subject.cls.from_config(copy.deepcopy(config)).get_config() == config


@applicable("weight_decay")
def test_weight_decay_is_decoupled_and_applied_once(subject):
    """With a zero gradient the only change is ``w <- w (1 - lr * weight_decay)``.

    Methods whose paper puts the decay inside the update (``decays_in_update``)
    follow their reference instead, which applies it where the paper does,
    for six steps (ScheduleFreeRAdam takes its first step at step 6).
    """
    lr, decay = 2.0**-4, 2.0**-3
    w0 = np.linspace(-1.0, 1.0, 6).reshape(2, 3)
    w = keras.Variable(w0, dtype="float64")
    optimizer = subject.build(learning_rate=lr, weight_decay=decay)
    zero = np.zeros_like(w0)
    if subject.decays_in_update:
        reference, expected = subject.reference({"weight_decay": decay}, lr), [w0]
        for _ in range(6):
            _apply(optimizer, [zero], [w], subject.micro_steps)
            expected = reference.step(expected, [zero])
        expected = expected[0]
    else:
        _apply(optimizer, [zero], [w], subject.micro_steps)
        expected = w0 * (1.0 - lr * decay)
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-12)
    assert not np.array_equal(w.numpy(), w0), "the decay changed the weights"


@applicable("norm_clipping")
@pytest.mark.parametrize("clip_arg", ["clipnorm", "global_clipnorm"])
def test_norm_clipping_equals_stepping_on_the_clipped_gradient(subject, clip_arg):
    init, gradient = _quadratic_problem()
    limit = 0.25
    clipped = subject.create(**{clip_arg: limit})
    unclipped = subject.create()
    assert _innermost_config(clipped.get_config())[clip_arg] == limit
    a = [keras.Variable(v, dtype="float64") for v in init]
    b = [keras.Variable(v, dtype="float64") for v in init]
    for step in range(5):
        grads = [100.0 * g for g in gradient([v.numpy() for v in a], step)]
        _apply(clipped, grads, a, subject.micro_steps)
        # Keras's options clip what the optimizer that owns them receives:
        # after a chain's gradient transformations, which leave a clipped
        # gradient as it is (they are idempotent and commute with shrinking).
        seen = subject.seen_by_inner(grads, [v.numpy() for v in b])
        if clip_arg == "clipnorm":  # each tensor separately
            by_hand = [g * min(1.0, limit / np.linalg.norm(g)) for g in seen]
        else:  # all tensors together
            norm = np.sqrt(sum(np.sum(g**2) for g in seen))
            by_hand = [g * min(1.0, limit / norm) for g in seen]
        _apply(unclipped, by_hand, b, subject.micro_steps)
        for va, vb in zip(a, b):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-9, atol=1e-12)


def _sign_balanced_gradients(seed: int = 2, steps: int = 5):
    """Gradients for the quadratic's (4, 3) matrix and (3,) vector, 100x their size.

    Each matrix column is ``(a, -a, b, -b)``: it has zero mean, and so does
    any element-wise symmetric clip of it. Gradient centralization (which
    subtracts the column means), AGC and global-norm clipping (which only
    shrink) then leave a value-clipped gradient as it is, so stepping on a
    gradient clipped by hand is the same as letting ``clipvalue`` clip what
    a chain's transformations hand on (as for ``clipnorm``).
    """
    rng = np.random.default_rng(seed)
    gradients = []
    for _ in range(steps):
        a, b = rng.uniform(0.1, 2.0, size=(2, 3))
        matrix = 100.0 * np.stack([a, -a, b, -b])
        gradients.append([matrix, 100.0 * rng.normal(size=3)])
    return gradients


def check_clipvalue_equals_stepping_on_the_clipped_gradient(subject):
    """``clipvalue`` gives the trajectory of stepping on ``clip(g, -v, v)`` by hand.

    ``v`` is the median magnitude of the first gradient the optimizer that
    owns the option sees, so every step clips some elements and not others.
    """
    init, _ = _quadratic_problem()
    gradients = _sign_balanced_gradients()
    seen = subject.seen_by_inner(gradients[0], init)
    limit = float(np.median(np.abs(np.concatenate([g.ravel() for g in seen]))))
    clipped = subject.create(clipvalue=limit)
    unclipped = subject.create()
    assert _innermost_config(clipped.get_config())["clipvalue"] == pytest.approx(limit)
    a = [keras.Variable(v, dtype="float64") for v in init]
    b = [keras.Variable(v, dtype="float64") for v in init]
    for grads in gradients:
        _apply(clipped, grads, a, subject.micro_steps)
        seen = subject.seen_by_inner(grads, [v.numpy() for v in b])
        assert any(np.any(np.abs(g) > limit) for g in seen), "the clip is active"
        by_hand = [np.clip(g, -limit, limit) for g in seen]
        _apply(unclipped, by_hand, b, subject.micro_steps)
        for va, vb in zip(a, b):
            np.testing.assert_allclose(va.numpy(), vb.numpy(), rtol=1e-9, atol=1e-12)
    rebuilt = subject.cls.from_config(clipped.get_config())
    assert _innermost(rebuilt).clipvalue == pytest.approx(limit)


@applicable("clipvalue")
def test_clipvalue_equals_stepping_on_the_clipped_gradient(subject):
    check_clipvalue_equals_stepping_on_the_clipped_gradient(subject)


# ---------------------------------------------------------------------------
# Precision, compilation, sparse gradients, distribution.
# ---------------------------------------------------------------------------
class _StateWatch(keras.callbacks.Callback):
    """Indices (in ``variables``) of the optimizer state that differed from its
    value at build time after any batch (state reset later still counts)."""

    def __init__(self, variables):
        super().__init__()
        self.watched = list(variables)
        self.initial = [np.array(v.numpy()) for v in self.watched]
        self.moved: set[int] = set()

    def on_train_batch_end(self, batch, logs=None):
        for i, (variable, initial) in enumerate(zip(self.watched, self.initial)):
            if i not in self.moved and not np.array_equal(variable.numpy(), initial):
                self.moved.add(i)


def check_mixed_float16_trains_and_moves_every_state(subject, digits):
    """``mixed_float16`` trains without NaN, and every optimizer variable that
    changes during 10 float32 steps also changes during 42 mixed-precision
    steps (a curvature estimate or second moment left at its initial value
    fails; state that moves and is reset, as an accumulator, counts as moved)."""
    x, y = digits

    def state_moved(epochs, samples):
        model = dense_model()
        model.compile(optimizer=subject.create(), loss=LOSS)
        optimizer = model.optimizer
        optimizer.build(model.trainable_variables)
        inner = getattr(optimizer, "inner_optimizer", optimizer)
        watch = _StateWatch(inner.variables)
        fit = model.fit(x[:samples], y[:samples], batch_size=128, epochs=epochs, verbose=0,
                        callbacks=[watch])
        assert len(inner.variables) == len(watch.watched), "optimizer variables created after build"
        return model, watch.moved, fit.history["loss"], [v.path for v in inner.variables]

    _, moved_float32, _, names = state_moved(1, 1280)
    keras.config.set_dtype_policy("mixed_float16")
    model, moved_mixed, history, mixed_names = state_moved(3, len(x))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(model.optimizer.inner_optimizer, subject.cls)
    assert all(np.isfinite(history))
    assert history[-1] < history[0]
    for weight in model.get_weights():
        assert np.all(np.isfinite(weight))
    assert len(mixed_names) == len(names)
    stuck = [names[i] for i in sorted(moved_float32 - moved_mixed)]
    assert not stuck, f"optimizer state that float32 training moves stays put under mixed_float16: {stuck}"


@by_training_name
@pytest.mark.slow
def test_mixed_float16_trains_and_moves_every_state_float32_moves(subject, digits):
    check_mixed_float16_trains_and_moves_every_state(subject, digits)


#: A float32 comparison of a ``rounding_calibrated`` subject allows this many
#: times the change a one-ulp perturbation of the data makes to the same run.
ROUNDING_FACTOR = 4


def _rounding_sensitivity(subject, x, y) -> float:
    """How far one-ulp-perturbed data moves 2 epochs of non-XLA float32 training.

    Both runs do the same arithmetic on inputs that differ by one float32
    ulp (``x (1 + 2^-23)``); the largest weight difference is what rounding
    alone does to this optimizer on this problem. Measured (max |diff|):
    Shampoo at default matrix_epsilon 7.8e-7, SOAP 6.2e-6, AdaHessian at
    default epsilon 3.0e-3 (its ``lr g / epsilon`` steps where the Hessian
    diagonal is ~0); XLA vs not then differed by 1.5e-6, 5.4e-6 and 2.2e-3,
    two replicas vs one by 9.5e-7, 6.2e-6 and 8.5e-5.
    """
    reference = dense_model()
    runs = []
    for data in (x, x * np.float32(1.0 + 2.0**-23)):
        model = _same_weights(dense_model(), reference)
        model.compile(optimizer=subject.create(), loss=LOSS)
        model.fit(data, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        runs.append(model.get_weights())
    return max(float(np.abs(a - b).max()) for a, b in zip(*runs))


_SENSITIVITY: dict[str, float] = {}  # per subject, computed once per test process


def _comparison_atol(subject, x, y, atol: float) -> float:
    """``atol``, or ROUNDING_FACTOR times the subject's rounding sensitivity if larger."""
    if not subject.rounding_calibrated:
        return atol
    if subject.id not in _SENSITIVITY:
        _SENSITIVITY[subject.id] = _rounding_sensitivity(subject, x, y)
    return max(atol, ROUNDING_FACTOR * _SENSITIVITY[subject.id])


@by_comparison_name
@pytest.mark.slow
def test_jit_compile_matches_eager_graph_training(subject, digits):
    """rtol 1e-4, atol 1e-5 (``rounding_calibrated`` subjects: see ``_comparison_atol``)."""
    x, y = digits[0][:512], digits[1][:512]
    reference = dense_model()
    models = {}
    for jit in (False, True):
        model = _same_weights(dense_model(), reference)
        model.compile(optimizer=subject.create(), loss=LOSS, jit_compile=jit)
        model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        models[jit] = model
    assert_weights_close(models[True], models[False], rtol=1e-4, atol=_comparison_atol(subject, x, y, 1e-5))
    moved = max(np.abs(a - b).max() for a, b in zip(models[True].get_weights(), reference.get_weights()))
    assert moved > 1e-3


@applicable("sparse_matches_dense")
def test_sparse_embedding_gradients_match_their_dense_equivalent(subject):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50, size=(8, 16, 5))
    targets = rng.normal(size=(8, 16, 1)).astype("float32")

    def make():
        keras.utils.set_random_seed(3)
        return keras.Sequential(
            [
                keras.Input((5,), dtype="int32"),
                keras.layers.Embedding(50, 4),
                keras.layers.GlobalAveragePooling1D(),
                keras.layers.Dense(1),
            ]
        )

    sparse_model, dense_model = make(), make()
    sparse_opt, dense_opt = subject.create(), subject.create()
    saw_sparse = False
    for xb, yb in zip(tokens, targets):
        for model, optimizer, densify in ((sparse_model, sparse_opt, False), (dense_model, dense_opt, True)):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(model(xb) - yb))
            grads = tape.gradient(loss, model.trainable_variables)
            if densify:
                grads = [tf.convert_to_tensor(g) for g in grads]
            else:
                saw_sparse |= isinstance(grads[0], tf.IndexedSlices)
            optimizer.apply(grads, model.trainable_variables)
    assert saw_sparse, "the Embedding gradient should arrive as IndexedSlices"
    assert_weights_close(sparse_model, dense_model, rtol=1e-6, atol=1e-7)


@by_comparison_name
@pytest.mark.slow
def test_mirrored_strategy_on_two_devices_matches_one_device(subject, digits):
    """Tolerance: rtol 1e-4, atol 1e-5 after 16 steps (summation order differs);
    ``rounding_calibrated`` subjects: see ``_comparison_atol``."""
    x, y = digits[0][:512], digits[1][:512]
    single = dense_model()
    initial = single.get_weights()
    single.compile(optimizer=subject.create(), loss=LOSS)
    single.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)

    strategy = mirrored_strategy()
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        mirrored = dense_model()
        mirrored.set_weights(initial)
        mirrored.compile(optimizer=subject.create(), loss=LOSS)
    mirrored.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)

    assert mirrored.optimizer.iterations.numpy() == single.optimizer.iterations.numpy() == 16
    assert_weights_close(mirrored, single, rtol=1e-4, atol=_comparison_atol(subject, x, y, 1e-5))


def test_exclusions_name_known_checks_and_say_why():
    excluded = [s for s in SUBJECTS if s.exclusions]
    for subject in excluded:
        for check, reason in subject.exclusions.items():
            assert check in EXCLUDABLE_CHECKS, f"{subject}: unknown check {check!r}"
            assert "test" in reason, f"{subject}: say where {check} is covered instead"


# ---------------------------------------------------------------------------
# Argument validation.
# ---------------------------------------------------------------------------
INVALID_VALUES = {
    "learning_rate": [-0.01, float("nan")],
    "epsilon": [-1e-8],
    "weight_decay": [-0.1],
    "clipnorm": [0.0, -1.0],
    "clipvalue": [0.0],
    "global_clipnorm": [-1.0],
    "momentum": [-0.1, 1.0, 1.5],
    "nu": [-0.1, 1.5],
    "nu_1": [1.5],
    "nu_2": [-0.5],
    "betas": [(), (0.5, 1.0), "0.9"],
    "initial_accumulator_value": [-1.0],
    "alpha": [-1.0],
    "clip_exponent": [0.0],
    "sma_threshold": [3.0],
    "alpha_warmup_steps": [0, 2.5],
    "beta_3_warmup_steps": [-3],
    "trust_coefficient": [0.0, -1.0],
    "exclude_from_adaptation": ["bias", [3], ["("], None],
    "grad_averaging": ["yes", 1],
    "paper_exact": ["yes", 1],
    # wrappers
    "inner": ["no-such-optimizer", 3, keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD())],
    "sync_period": [0, 2.5],
    "slow_step_size": [-0.1, 1.5],
    "conv_only": ["yes"],
    "start_step": [0, 1.5],
    "average_period": [0],
    "swa_learning_rate": [0.0, -1.0],
    "swa_min_learning_rate": [0.01],  # without swa_learning_rate
    "final_weights": ["best"],
    "decay": [-0.1, 1.0],
    "dynamic_decay": ["yes"],
    "steps": [0, 2.5],
    "transforms": [["GradientCentralization"]],
    "rho": [0.0, -0.05, "0.05"],
    "eta": [-0.01],
    # LBFGS
    "history_size": [0, 2.5],
    "max_iterations": [0],
    "max_evaluations": [0],
    "tolerance_grad": [-1.0],
    "tolerance_change": [-1.0],
    "line_search": ["backtracking"],
    "c1": [0.0, 1.0],
    "c2": [1.0],
}


def _invalid_arguments(subject):
    for name in subject.own_arguments:
        values = [-0.1, 1.0, 1.5, "0.9"] if name.startswith("beta_") else INVALID_VALUES.get(name, [])
        for value in values:
            yield name, value


@by_name
def test_invalid_arguments_raise_value_error_naming_the_argument(subject):
    cases = list(_invalid_arguments(subject))
    probed = {name for name, _ in cases} - {"learning_rate", "epsilon", "weight_decay",
                                             "clipnorm", "clipvalue", "global_clipnorm"}
    assert probed, "at least one method-specific argument is probed"
    for name, value in cases:
        with pytest.raises(ValueError, match=name):
            if name == "inner":
                subject.cls(value)
            else:
                subject.build({name: value})
