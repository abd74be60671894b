"""BatchRenormalization and GhostBatchNormalization against their float64 NumPy references.

The layers run in float64 (``dtype="float64"``), so the comparisons hold at
rtol 1e-9: the layer and the reference compute the same quantities in a
different order, which costs a few float64 ulps, not 1e-9.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import mirrored_strategy
from keras_optsuite.layers.batch_renormalization import BatchRenormalization
from keras_optsuite.layers.ghost_batch_normalization import GhostBatchNormalization
from keras_optsuite.schedules.ramp import Ramp
from references import normalization as ref

RTOL = 1e-9
ATOL = 1e-12
EPSILON = 1e-3


def _changing_batches(rng, steps, shape):
    """Batches whose location and scale jump around, one per step, per channel."""
    locations = [0.0, 3.0, -2.0, 6.0, -5.0, 1.0, 2.0]
    scales = [1.0, 4.0, 0.3, 2.0, 8.0, 0.2, 1.5]
    channel_shift = np.linspace(-1.0, 1.0, shape[-1])
    return [
        locations[t] + channel_shift + scales[t] * (1.0 + 0.5 * channel_shift) * rng.normal(size=shape)
        for t in range(steps)
    ]


def _affine(channels, rng):
    gamma = rng.uniform(0.5, 2.0, channels)
    beta = rng.normal(size=channels)
    return gamma, beta


def _initializers(gamma, beta):
    return {"gamma_initializer": keras.initializers.Constant(gamma),
            "beta_initializer": keras.initializers.Constant(beta)}


def _close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=RTOL, atol=ATOL)


# -- Batch Renormalization ------------------------------------------------------------
@pytest.mark.parametrize("renorm_momentum", [0.6, 0.8], ids=["one_pair", "two_pairs"])
def test_batch_renorm_follows_algorithm_1_with_scheduled_clipping(renorm_momentum):
    rng = np.random.default_rng(0)
    gamma, beta = _affine(3, rng)
    # Dyadic ramp values (exact in the schedule's float32): r_max 1, 1, 1.5,
    # 2, 2.5, 3, 3 and d_max 0, 0, 0.5, 1, 1.5, 2, 2 at steps 0..6.
    r_max, d_max = Ramp(1.0, 3.0, 1, 5), Ramp(0.0, 2.0, 1, 5)
    layer = BatchRenormalization(
        r_max=r_max, d_max=d_max, momentum=0.6, renorm_momentum=renorm_momentum,
        epsilon=EPSILON, dtype="float64", **_initializers(gamma, beta),
    )
    state = ref.renorm_init_state(3)
    r_clipped_high = r_clipped_low = d_clipped = r_free = 0
    for step, x in enumerate(_changing_batches(rng, 7, (6, 2, 3))):
        bounds = {"r_max": float(r_max(step)), "d_max": float(d_max(step))}
        with tf.GradientTape() as tape:
            x_tensor = tf.constant(x)
            tape.watch(x_tensor)
            y = layer(x_tensor, training=True)
            upstream = np.cos(np.arange(x.size)).reshape(x.shape)
            loss = tf.reduce_sum(y * upstream)
        grads = tape.gradient(loss, [x_tensor, layer.gamma, layer.beta])
        expected, info = ref.batch_renorm_train(
            x, state, gamma, beta, momentum=0.6, renorm_momentum=renorm_momentum,
            epsilon=EPSILON, **bounds,
        )
        _close(y, expected)
        _close(grads[0], ref.batch_renorm_input_gradient(upstream, info, gamma))
        _close(grads[1], (upstream * info["x_hat"]).sum(axis=(0, 1)))
        _close(grads[2], upstream.sum(axis=(0, 1)))
        _close(layer.renorm_mean, state["renorm_mean"])
        _close(layer.renorm_stddev, state["renorm_stddev"])
        _close(layer.moving_mean, state["moving_mean"])
        _close(layer.moving_stddev, state["moving_stddev"])
        _close(layer(x, training=False), ref.batch_renorm_inference(x, state, gamma, beta))
        assert int(layer.iterations.numpy()) == step + 1
        if step < 2:  # r_max = 1, d_max = 0: batch normalization
            np.testing.assert_array_equal(info["r"], 1.0)
            np.testing.assert_array_equal(info["d"], 0.0)
        else:
            r_clipped_high += int(np.sum(info["r_raw"] > bounds["r_max"]))
            r_clipped_low += int(np.sum(info["r_raw"] < 1.0 / bounds["r_max"]))
            r_free += int(np.sum(info["r"] == info["r_raw"]))
            d_clipped += int(np.sum(np.abs(info["d_raw"]) > bounds["d_max"]))
    # The steps exercised both of r's bounds, d's bound, and unclipped r.
    assert min(r_clipped_high, r_clipped_low, d_clipped, r_free) > 0, (
        r_clipped_high, r_clipped_low, d_clipped, r_free)


def test_paper_default_schedule_is_evaluated_at_the_layer_step_counter():
    layer = BatchRenormalization(epsilon=EPSILON, dtype="float64")
    r_max, d_max = layer.r_max, layer.d_max
    # The paper's ramps: r_max 1 -> 3 over steps 5k..40k, d_max 0 -> 5 over 5k..25k.
    for step, r_value, d_value in [(0, 1.0, 0.0), (5_000, 1.0, 0.0), (15_000, 1.0 + 2 / 3.5, 2.5),
                                   (22_500, 2.0, 4.375), (25_000, 1.0 + 2 * 20 / 35, 5.0),
                                   (40_000, 3.0, 5.0), (90_000, 3.0, 5.0)]:
        np.testing.assert_allclose(float(r_max(step)), r_value, rtol=1e-6)
        np.testing.assert_allclose(float(d_max(step)), d_value, rtol=1e-6)

    x = 8.0 + 5.0 * np.random.default_rng(1).normal(size=(16, 2))
    layer.build(x.shape)
    layer(x, training=False)  # inference does not count
    assert int(layer.iterations.numpy()) == 0
    layer.iterations.assign(30_000)
    bounds = {"r_max": float(r_max(30_000)), "d_max": float(d_max(30_000))}
    state = ref.renorm_init_state(2)
    expected, info = ref.batch_renorm_train(
        x, state, np.ones(2), np.zeros(2), momentum=0.99, renorm_momentum=0.99, epsilon=EPSILON,
        **bounds,
    )
    assert np.all(info["r_raw"] > bounds["r_max"]) and np.all(info["d_raw"] > bounds["d_max"])
    assert 1.0 < bounds["r_max"] < 3.0
    _close(layer(x, training=True), expected)
    assert int(layer.iterations.numpy()) == 30_001


def test_batch_renorm_with_r_max_1_d_max_0_is_batch_normalization():
    rng = np.random.default_rng(2)
    gamma, beta = _affine(4, rng)
    renorm = BatchRenormalization(r_max=1.0, d_max=0.0, momentum=0.5, dtype="float64",
                                  **_initializers(gamma, beta))
    plain = keras.layers.BatchNormalization(momentum=0.5, dtype="float64", **_initializers(gamma, beta))
    for x in _changing_batches(rng, 3, (8, 4)):
        np.testing.assert_allclose(renorm(x, training=True), plain(x, training=True),
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(renorm.moving_mean, plain.moving_mean, rtol=1e-12, atol=1e-12)


def test_batch_renorm_is_not_keras_renorm_config():
    layer = BatchRenormalization(r_max=2.0, d_max=Ramp(0.0, 1.0, 0, 10), renorm_momentum=0.9)
    config = layer.get_config()
    assert "renorm" not in config and "renorm_clipping" not in config
    assert config["r_max"] == 2.0 and config["renorm_momentum"] == 0.9
    clone = BatchRenormalization.from_config(config)
    assert isinstance(clone.d_max, Ramp) and clone.d_max.end_step == 10
    assert clone.get_config() == config


# -- Ghost Batch Normalization ----------------------------------------------------------
@pytest.mark.parametrize("axis", [-1, 1], ids=["channels_last", "channels_first"])
def test_ghost_batch_norm_matches_reference_with_uneven_last_ghost(axis):
    rng = np.random.default_rng(3)
    gamma, beta = _affine(3, rng)
    layer = GhostBatchNormalization(virtual_batch_size=4, axis=axis, momentum=0.7,
                                    epsilon=EPSILON, dtype="float64", **_initializers(gamma, beta))
    state = {"moving_mean": np.zeros(3), "moving_variance": np.ones(3)}
    for x in _changing_batches(rng, 4, (10, 2, 3)):
        if axis == 1:
            x = np.swapaxes(x, 1, 2)  # channels on axis 1: (10, 3, 2)
        # ghost batches of 4, 4 and 2 examples
        expected = ref.ghost_batch_norm_train(x, state, gamma, beta, virtual_batch_size=4,
                                              momentum=0.7, epsilon=EPSILON, channel_axis=axis)
        _close(layer(x, training=True), expected)
        _close(layer.moving_mean, state["moving_mean"])
        _close(layer.moving_variance, state["moving_variance"])
        _close(layer(x, training=False),
               ref.batch_norm_inference(x, state, gamma, beta, epsilon=EPSILON, channel_axis=axis))


def test_ghost_statistics_differ_from_batch_statistics():
    """The ghost outputs are not batch normalization's: each ghost is centred on its own."""
    x = np.concatenate([np.zeros((4, 1)), np.full((4, 1), 10.0)]) + np.tile([[-1.0], [1.0]], (4, 1))
    layer = GhostBatchNormalization(virtual_batch_size=4, momentum=0.0, epsilon=EPSILON, dtype="float64")
    y = np.asarray(layer(x, training=True))
    # Each ghost holds -1, 1, -1, 1 around its own mean (0, then 10): variance 1.
    _close(y, np.tile([[-1.0], [1.0]], (4, 1)) / np.sqrt(1.0 + EPSILON))
    _close(layer.moving_mean, [5.0])
    _close(layer.moving_variance, [1.0])  # within-ghost, not the batch's 26


@pytest.mark.parametrize("virtual_batch_size", [10, 16])
def test_ghost_with_one_ghost_batch_is_batch_normalization(virtual_batch_size):
    rng = np.random.default_rng(4)
    gamma, beta = _affine(3, rng)
    ghost = GhostBatchNormalization(virtual_batch_size, momentum=0.5, dtype="float64",
                                    **_initializers(gamma, beta))
    plain = keras.layers.BatchNormalization(momentum=0.5, dtype="float64", **_initializers(gamma, beta))
    for x in _changing_batches(rng, 3, (10, 3)):
        np.testing.assert_allclose(ghost(x, training=True), plain(x, training=True),
                                   rtol=1e-12, atol=1e-12)
        for ours, keras_own in [(ghost.moving_mean, plain.moving_mean),
                                (ghost.moving_variance, plain.moving_variance)]:
            np.testing.assert_allclose(ours, keras_own, rtol=1e-12, atol=1e-12)


def test_ghost_last_batch_of_one_example_and_dynamic_batch_size():
    rng = np.random.default_rng(5)
    gamma, beta = _affine(2, rng)
    layer = GhostBatchNormalization(virtual_batch_size=4, momentum=0.5, epsilon=EPSILON,
                                    dtype="float64", **_initializers(gamma, beta))
    state = {"moving_mean": np.zeros(2), "moving_variance": np.ones(2)}
    x = rng.normal(size=(5, 2)) * 3.0 + 1.0
    expected = ref.ghost_batch_norm_train(x, state, gamma, beta, virtual_batch_size=4,
                                          momentum=0.5, epsilon=EPSILON)
    y = np.asarray(layer(x, training=True))
    _close(y, expected)
    _close(y[4], beta)  # a ghost of one example: x - mean_g = 0
    _close(layer.moving_mean, state["moving_mean"])

    # Batch size known only at run time (as in fit's last, smaller batch), under XLA.
    call = tf.function(lambda x: layer(x, training=True), jit_compile=True, reduce_retracing=True,
                       input_signature=[tf.TensorSpec((None, 2), tf.float64)])
    for batch in (7, 8, 3):
        x = rng.normal(size=(batch, 2)) * 2.0 - 1.0
        expected = ref.ghost_batch_norm_train(x, state, gamma, beta, virtual_batch_size=4,
                                              momentum=0.5, epsilon=EPSILON)
        _close(call(tf.constant(x)), expected)
        _close(layer.moving_variance, state["moving_variance"])


def test_ghost_mask_excludes_positions_from_the_statistics():
    rng = np.random.default_rng(6)
    layer = GhostBatchNormalization(virtual_batch_size=3, momentum=0.0, epsilon=EPSILON, dtype="float64")
    x = rng.normal(size=(6, 4, 2))
    mask = rng.uniform(size=(6, 4)) > 0.3
    y = np.asarray(layer(x, training=True, mask=mask))
    means, variances, counts = [], [], []
    for start in (0, 3):
        ghost, kept = x[start:start + 3], mask[start:start + 3]
        values = ghost[kept]  # (kept positions, channels)
        mean, variance = values.mean(axis=0), values.var(axis=0)
        _close(y[start:start + 3], (ghost - mean) / np.sqrt(variance + EPSILON))
        means.append(mean), variances.append(variance), counts.append(len(values))
    counts = np.asarray(counts, float)[:, None]
    _close(layer.moving_mean, (counts * means).sum(0) / counts.sum())
    _close(layer.moving_variance, (counts * variances).sum(0) / counts.sum())


# -- both layers ------------------------------------------------------------------------
LAYERS = {
    "BatchRenormalization": lambda **kw: BatchRenormalization(
        r_max=Ramp(1.0, 3.0, 0, 4), d_max=Ramp(0.0, 2.0, 0, 4), momentum=0.5, renorm_momentum=0.5, **kw),
    "GhostBatchNormalization": lambda **kw: GhostBatchNormalization(3, momentum=0.5, **kw),
}


@pytest.mark.parametrize("name", LAYERS)
def test_mixed_float16_statistics_in_float32(name):
    x = (np.random.default_rng(7).normal(size=(8, 3)) * 300.0 + 1000.0).astype("float16")
    reference = LAYERS[name](dtype="float32")
    expected = [reference(x.astype("float32"), training=True) for _ in range(2)][-1]
    keras.config.set_dtype_policy("mixed_float16")
    layer = LAYERS[name]()
    y = [layer(x, training=True) for _ in range(2)][-1]
    assert y.dtype == "float16"
    np.testing.assert_allclose(np.asarray(y, "float32"), expected, rtol=2e-3, atol=2e-3)
    # x**2 ~ 1e6 overflows nothing in float32; the moving statistics are
    # float32 variables and agree with the float32 layer's to float32 rounding.
    for ours, theirs in zip(layer.non_trainable_weights, reference.non_trainable_weights):
        assert ours.dtype == theirs.dtype
        np.testing.assert_allclose(ours, theirs, rtol=1e-5)


@pytest.mark.parametrize("name", LAYERS)
def test_keras_file_keeps_step_counter_and_moving_statistics(name, tmp_path):
    rng = np.random.default_rng(8)
    model = keras.Sequential([keras.Input((3,)), LAYERS[name]()])
    for x in _changing_batches(rng, 3, (7, 3)):
        model(x.astype("float32"), training=True)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.layers[0].get_config() == model.layers[0].get_config()
    for ours, theirs in zip(model.layers[0].weights, loaded.layers[0].weights):
        assert ours.name == theirs.name
        np.testing.assert_array_equal(theirs, ours)
    if name == "BatchRenormalization":
        assert int(loaded.layers[0].iterations.numpy()) == 3
    # The next training step (r_max, d_max at step 3) agrees too.
    x = _changing_batches(rng, 4, (7, 3))[3].astype("float32")
    np.testing.assert_array_equal(loaded(x, training=True), model(x, training=True))


@pytest.mark.parametrize("name", LAYERS)
def test_jit_compiled_training_matches_eager(name):
    x = _changing_batches(np.random.default_rng(9), 2, (7, 3))
    eager, compiled = LAYERS[name](), LAYERS[name]()
    call = tf.function(lambda x: compiled(x, training=True), jit_compile=True)
    for batch in x:
        batch = batch.astype("float32")
        np.testing.assert_allclose(call(batch), eager(batch, training=True), rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(compiled.non_trainable_weights, eager.non_trainable_weights):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


# -- MirroredStrategy ---------------------------------------------------------------
def _fit_on_two_replicas(layer_factory, x):
    """One fit step on 2 replicas (each gets half of ``x``); the layer's per-replica values."""
    strategy = mirrored_strategy()
    with strategy.scope():
        layer = layer_factory()
        model = keras.Sequential([keras.Input(x.shape[1:]), layer])
        model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(x, x, batch_size=len(x), epochs=1, shuffle=False, verbose=0)

    def per_replica(variable):
        return [np.asarray(v.numpy()) for v in variable.value.values]

    return layer, per_replica


def test_keras_batch_normalization_keeps_per_replica_moving_means():
    """Keras 3.15.1's own BatchNormalization: each replica keeps its own moving mean.

    When this fails, Keras averages its moving statistics across replicas:
    update the docstrings of ReplicaMeanStatistics (layers/_base.py),
    BatchRenormalization and GhostBatchNormalization, which say it does not.
    """
    x = np.array([[0.0], [0.0], [10.0], [10.0]], "float32")
    layer, per_replica = _fit_on_two_replicas(lambda: keras.layers.BatchNormalization(momentum=0.0), x)
    replica_means = per_replica(layer.moving_mean)
    assert not np.allclose(replica_means[0], replica_means[1]), (
        f"Keras's BatchNormalization now gives every replica the same moving mean {replica_means}: "
        "update the docs of ReplicaMeanStatistics, BatchRenormalization and GhostBatchNormalization"
    )
    np.testing.assert_allclose(replica_means, [[0.0], [10.0]])


@pytest.mark.parametrize("name", ["BatchRenormalization", "GhostBatchNormalization"])
def test_replicas_hold_the_mean_of_their_moving_statistics_updates(name):
    x = np.array([[0.0], [2.0], [1.0], [10.0], [14.0], [13.0]], "float32")  # 3 examples per replica
    halves = (x[:3].astype(np.float64), x[3:].astype(np.float64))
    if name == "BatchRenormalization":
        factory = lambda: BatchRenormalization(r_max=2.0, d_max=1.0, momentum=0.25,  # noqa: E731
                                               renorm_momentum=0.5, epsilon=EPSILON)
        states = [ref.renorm_init_state(1) for _ in halves]
        for half, state in zip(halves, states):
            ref.batch_renorm_train(half, state, 1.0, 0.0, r_max=2.0, d_max=1.0, momentum=0.25,
                                   renorm_momentum=0.5, epsilon=EPSILON)
        names = ["moving_mean", "moving_stddev", "renorm_mean", "renorm_stddev"]
    else:
        factory = lambda: GhostBatchNormalization(2, momentum=0.25, epsilon=EPSILON)  # noqa: E731
        states = [{"moving_mean": np.zeros(1), "moving_variance": np.ones(1)} for _ in halves]
        for half, state in zip(halves, states):  # ghosts of 2 and 1 examples per replica
            ref.ghost_batch_norm_train(half, state, 1.0, 0.0, virtual_batch_size=2, momentum=0.25,
                                       epsilon=EPSILON)
        names = ["moving_mean", "moving_variance"]
    layer, per_replica = _fit_on_two_replicas(factory, x)
    for variable_name in names:
        expected = (states[0][variable_name] + states[1][variable_name]) / 2.0
        assert not np.allclose(states[0][variable_name], states[1][variable_name])
        for value in per_replica(getattr(layer, variable_name)):
            np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=variable_name)
    if name == "BatchRenormalization":
        stddev = per_replica(layer.moving_stddev)[0]
        for value in per_replica(layer.moving_variance):  # derived from the averaged stddev
            np.testing.assert_allclose(value, stddev**2 - EPSILON, rtol=1e-6)
        assert [int(v) for v in per_replica(layer.iterations)] == [1, 1]


def test_synchronized_batch_renorm_uses_the_global_batch_statistics():
    x = np.array([[0.0], [2.0], [1.0], [10.0], [14.0], [13.0]], "float32")
    factory = lambda: BatchRenormalization(r_max=2.0, d_max=1.0, momentum=0.0,  # noqa: E731
                                           renorm_momentum=0.0, synchronized=True)
    layer, per_replica = _fit_on_two_replicas(factory, x)
    for mean, stddev in zip(per_replica(layer.moving_mean), per_replica(layer.moving_stddev)):
        np.testing.assert_allclose(mean, [x.mean()], rtol=1e-6)
        np.testing.assert_allclose(stddev, [np.sqrt(x.var() + EPSILON)], rtol=1e-6)


# -- invalid arguments --------------------------------------------------------------
@pytest.mark.parametrize(
    "make, argument",
    [
        (lambda: GhostBatchNormalization(virtual_batch_size=0), "virtual_batch_size"),
        (lambda: GhostBatchNormalization(virtual_batch_size=2.5), "virtual_batch_size"),
        (lambda: GhostBatchNormalization(4, momentum=1.5), "momentum"),
        (lambda: GhostBatchNormalization(4, epsilon=0.0), "epsilon"),
        (lambda: BatchRenormalization(r_max=0.5), "r_max"),
        (lambda: BatchRenormalization(r_max=Ramp(0.5, 3.0, 0, 10)), "r_max.start_value"),
        (lambda: BatchRenormalization(d_max=-1.0), "d_max"),
        (lambda: BatchRenormalization(d_max=Ramp(0.0, -1.0, 0, 10)), "d_max.end_value"),
        (lambda: BatchRenormalization(momentum=1.5), "momentum"),
        (lambda: BatchRenormalization(renorm_momentum=-0.1), "renorm_momentum"),
        (lambda: BatchRenormalization(center="yes"), "center"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_them(make, argument):
    with pytest.raises(ValueError, match=rf"\b{argument}\b"):
        make()


def test_ghost_batch_norm_rejects_the_batch_axis():
    with pytest.raises(ValueError, match="axis"):
        GhostBatchNormalization(4, axis=0)(np.zeros((4, 3)), training=True)
