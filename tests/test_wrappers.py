"""What the wrappers promise beyond the contract suite (``test_optimizer_contract.py``).

- the inner optimizer's ``iterations`` advance, so bias correction is not frozen;
- accumulating n micro-batches equals one step on the n-times larger batch,
  on one device and under MirroredStrategy;
- clipping under 2 replicas equals clipping on one device;
- a NaN batch leaves weights and optimizer state untouched, on every replica;
- averaged weights are what validation, evaluation and checkpoints see;
- wrappers compose with each other and with Keras's MultiOptimizer.
"""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import LOSS, assert_weights_close, dense_model, mirrored_strategy

from keras_optsuite.callbacks import SwapEvaluationWeights
from keras_optsuite.optimizers import (
    AGC,
    SWA,
    ClipByGlobalNorm,
    ExponentialMovingAverage,
    GradientAccumulation,
    GradientCentralization,
    Lookahead,
    RAdam,
    SkipNonFinite,
    SWALearningRate,
    applied_updates,
    chain,
    iter_optimizers,
)


def _moved(model, initial):
    return max(np.abs(w - i).max() for w, i in zip(model.get_weights(), initial))


# ---------------------------------------------------------------------------
# Inner iterations.
# ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrap,updates_per_call",
    [
        (lambda inner: Lookahead(inner, sync_period=3), 1),
        (lambda inner: SWA(inner, start_step=2), 1),
        (lambda inner: ExponentialMovingAverage(inner), 1),
        (lambda inner: SkipNonFinite(inner), 1),
        (lambda inner: chain(GradientCentralization(), inner), 1),
        (lambda inner: GradientAccumulation(inner, steps=2), 0.5),
        (lambda inner: Lookahead(GradientAccumulation(SkipNonFinite(inner), steps=2)), 0.5),
    ],
    ids=["Lookahead", "SWA", "EMA", "SkipNonFinite", "Chain", "GradientAccumulation", "nested"],
)
def test_inner_iterations_advance_so_bias_correction_is_not_frozen(wrap, updates_per_call):
    inner = keras.optimizers.Adam(0.1)
    optimizer = wrap(inner)
    w = keras.Variable(np.ones(3))
    for _ in range(6):
        optimizer.apply([tf.constant([1.0, -2.0, 0.5], tf.float64)], [w])
    assert int(optimizer.iterations.numpy()) == 6
    assert int(inner.iterations.numpy()) == int(6 * updates_per_call)
    assert int(applied_updates(optimizer).numpy()) == int(6 * updates_per_call)
    # Inner state is part of the wrapper's state (so it is saved).
    inner_ids = {id(v) for v in inner.variables}
    assert inner_ids <= {id(v) for v in optimizer.variables}


# ---------------------------------------------------------------------------
# Gradient accumulation.
# ---------------------------------------------------------------------------
def _fit(model, optimizer, x, y, batch_size, epochs=2):
    model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x, y, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    return model


@pytest.mark.parametrize("inner", ["adam", "radam"])
def test_accumulating_micro_batches_equals_one_large_batch_step(inner, digits):
    """Tolerance: rtol 1e-5, atol 1e-6 after 8 updates (float32 summation order)."""
    x, y = digits[0][:512], digits[1][:512]
    make = (lambda: keras.optimizers.Adam(0.01)) if inner == "adam" else (lambda: RAdam(0.01))
    initial = dense_model().get_weights()

    large = dense_model()
    large.set_weights(initial)
    _fit(large, make(), x, y, batch_size=128)

    accumulated = dense_model()
    accumulated.set_weights(initial)
    _fit(accumulated, GradientAccumulation(make(), steps=4), x, y, batch_size=32)

    assert int(accumulated.optimizer.inner.iterations.numpy()) == 8 == int(large.optimizer.iterations.numpy())
    assert_weights_close(accumulated, large, rtol=1e-5, atol=1e-6)
    assert _moved(large, initial) > 1e-3


@pytest.mark.slow
def test_accumulation_under_mirrored_strategy_equals_one_large_batch_on_one_device(digits):
    """2 replicas x 16 samples x 4 micro-steps = one 128-sample batch. rtol 1e-5, atol 1e-6."""
    x, y = digits[0][:512], digits[1][:512]
    initial = dense_model().get_weights()
    large = dense_model()
    large.set_weights(initial)
    _fit(large, keras.optimizers.Adam(0.01), x, y, batch_size=128)

    strategy = mirrored_strategy()
    with strategy.scope():
        mirrored = dense_model()
        mirrored.set_weights(initial)
        optimizer = GradientAccumulation(keras.optimizers.Adam(0.01), steps=4)
    _fit(mirrored, optimizer, x, y, batch_size=32)

    assert int(optimizer.inner.iterations.numpy()) == 8
    assert_weights_close(mirrored, large, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Clipping after the cross-replica sum.
# ---------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "make",
    [
        lambda: chain(ClipByGlobalNorm(0.05), keras.optimizers.SGD(0.5)),
        # Inside any wrapper, Keras's own global_clipnorm sees the summed gradient too.
        lambda: Lookahead(keras.optimizers.SGD(0.5, global_clipnorm=0.05), sync_period=1000),
        lambda: chain(AGC(0.001), keras.optimizers.SGD(0.5)),
    ],
    ids=["ClipByGlobalNorm", "inner-global_clipnorm", "AGC"],
)
def test_clipping_under_two_replicas_equals_clipping_on_one_device(make, digits):
    """SGD makes clipping visible in the weights. rtol 1e-5, atol 1e-6 after 8 steps."""
    x, y = digits[0][:512], digits[1][:512]
    initial = dense_model().get_weights()
    single = dense_model()
    single.set_weights(initial)
    _fit(single, make(), x, y, batch_size=128)

    strategy = mirrored_strategy()
    with strategy.scope():
        mirrored = dense_model()
        mirrored.set_weights(initial)
        optimizer = make()
    _fit(mirrored, optimizer, x, y, batch_size=128)
    assert_weights_close(mirrored, single, rtol=1e-5, atol=1e-6)

    unclipped = dense_model()
    unclipped.set_weights(initial)
    _fit(unclipped, keras.optimizers.SGD(0.5), x, y, batch_size=128)
    # The clip was active: without it the weights end elsewhere.
    assert max(np.abs(a - b).max() for a, b in zip(unclipped.get_weights(), single.get_weights())) > 1e-2


# ---------------------------------------------------------------------------
# Non-finite gradients.
# ---------------------------------------------------------------------------
def _state(optimizer, variables):
    return [v.numpy().copy() for v in variables] + [
        v.numpy().copy() for v in optimizer.inner.variables
    ]


def _stepper(optimizer, compiled):
    """``optimizer.apply`` eagerly, or in a function compiled by XLA (which selects, not branches)."""
    if not compiled:
        return optimizer.apply

    def apply(grads, variables):
        tf.function(lambda *grads: optimizer.apply(list(grads), variables), jit_compile=True)(*grads)

    return apply


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_non_finite_gradient_leaves_weights_and_state_untouched(bad, compiled):
    optimizer = SkipNonFinite(keras.optimizers.Adam(0.1))
    w = keras.Variable(np.array([1.0, 2.0, 3.0]))
    b = keras.Variable(np.array([0.5]))
    optimizer.build([w, b])
    apply = _stepper(optimizer, compiled)
    apply([tf.constant([0.1, 0.2, 0.3], tf.float64), tf.constant([1.0], tf.float64)], [w, b])
    before = _state(optimizer, [w, b])

    apply([tf.constant([0.1, bad, 0.3], tf.float64), tf.constant([1.0], tf.float64)], [w, b])
    for saved, now in zip(before, _state(optimizer, [w, b])):
        np.testing.assert_array_equal(saved, now)
    assert int(optimizer.skipped_steps.numpy()) == 1
    assert int(optimizer.inner.iterations.numpy()) == 1
    assert int(optimizer.iterations.numpy()) == 2

    apply([tf.constant([0.1, 0.2, 0.3], tf.float64), tf.constant([1.0], tf.float64)], [w, b])
    assert int(optimizer.inner.iterations.numpy()) == 2
    assert not np.array_equal(w.numpy(), before[0])


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "xla"])
def test_a_non_finite_sparse_gradient_is_skipped_too(compiled):
    optimizer = SkipNonFinite(keras.optimizers.Adam(0.1))
    table = keras.Variable(np.ones((4, 2)))
    optimizer.build([table])
    apply = _stepper(optimizer, compiled)
    good = tf.IndexedSlices(tf.constant([[1.0, 1.0]], tf.float64), tf.constant([1]), tf.constant([4, 2]))
    bad = tf.IndexedSlices(tf.constant([[math.nan, 1.0]], tf.float64), tf.constant([2]), tf.constant([4, 2]))
    apply([good], [table])
    after_good = table.numpy().copy()
    apply([bad], [table])
    np.testing.assert_array_equal(table.numpy(), after_good)
    assert int(optimizer.skipped_steps.numpy()) == 1


@pytest.mark.slow
def test_a_nan_on_one_replica_skips_the_step_on_every_replica(digits):
    """The finiteness test runs on the summed gradient, so replicas cannot diverge."""
    x, y = digits[0][:256].copy(), digits[1][:256]
    x[64 + 40, 3] = np.nan  # second batch of 64, in the second replica's half
    strategy = mirrored_strategy()
    with strategy.scope():
        model = dense_model()
        optimizer = SkipNonFinite(keras.optimizers.Adam(0.01))
        model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
    assert int(optimizer.skipped_steps.numpy()) == 1
    assert int(optimizer.inner.iterations.numpy()) == 3
    for variable in model.trainable_variables:
        replicas = [v.numpy() for v in variable.value.values]
        assert all(np.all(np.isfinite(r)) for r in replicas)
        np.testing.assert_array_equal(replicas[0], replicas[1])


# ---------------------------------------------------------------------------
# Weight averaging and the evaluation-weights callback.
# ---------------------------------------------------------------------------
def test_swa_learning_rate_hands_over_at_start_step_in_closed_form():
    schedule = SWALearningRate(0.1, start_step=4, swa_learning_rate=0.05,
                               swa_min_learning_rate=0.01, cycle_length=4)
    # Keras calls a schedule with the 0-based count of updates already made.
    got = [float(schedule(step)) for step in range(12)]
    expected = []
    for update in range(1, 13):
        if update <= 4:
            expected.append(0.1)
        else:
            t = (((update - 4) - 1) % 4 + 1) / 4
            expected.append((1 - t) * 0.05 + t * 0.01)
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    rebuilt = SWALearningRate.from_config(schedule.get_config())
    np.testing.assert_allclose([float(rebuilt(s)) for s in range(12)], got, rtol=0)
    constant = SWALearningRate(keras.optimizers.schedules.ExponentialDecay(0.1, 1, 0.5), 2, 0.03)
    np.testing.assert_allclose([float(constant(s)) for s in range(4)], [0.1, 0.05, 0.03, 0.03], rtol=1e-6)


@pytest.mark.parametrize(
    "make",
    [lambda: SWA(keras.optimizers.Adam(0.01), start_step=3, average_period=2, final_weights="last"),
     lambda: ExponentialMovingAverage(keras.optimizers.Adam(0.01), decay=0.9, final_weights="last")],
    ids=["SWA", "EMA"],
)
def test_validation_and_evaluate_see_the_averaged_weights(make, digits):
    x, y = digits
    model = dense_model()
    optimizer = make()
    model.compile(optimizer=optimizer, loss=LOSS)
    history = model.fit(
        x[:512], y[:512], batch_size=64, epochs=2, verbose=0, shuffle=False,
        validation_data=(x[512:768], y[512:768]), callbacks=[SwapEvaluationWeights()],
    )
    # fit ended with final_weights="last": the training weights are in the model.
    assert not optimizer.evaluation_weights_in_use
    training = model.get_weights()
    averages = [v.numpy() for v in optimizer.averaged_variables]
    assert max(np.abs(a - t).max() for a, t in zip(averages, training)) > 1e-4

    at_training_weights = model.evaluate(x[512:768], y[512:768], verbose=0)
    model.set_weights(averages)
    at_average = model.evaluate(x[512:768], y[512:768], verbose=0)
    model.set_weights(training)
    assert history.history["val_loss"][-1] == pytest.approx(at_average, rel=1e-6)
    assert abs(at_average - at_training_weights) > 1e-5

    # evaluate() with the callback also swaps, and puts the training weights back.
    swapped = model.evaluate(x[512:768], y[512:768], verbose=0, callbacks=[SwapEvaluationWeights()])
    assert swapped == pytest.approx(at_average, rel=1e-6)
    for now, before in zip(model.get_weights(), training):
        np.testing.assert_array_equal(now, before)


def test_fit_ends_with_the_documented_final_weights(digits):
    x, y = digits
    results = {}
    for final in ("averaged", "last"):
        model = dense_model()
        optimizer = ExponentialMovingAverage(keras.optimizers.Adam(0.01), decay=0.9, final_weights=final)
        model.compile(optimizer=optimizer, loss=LOSS)
        model.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0, shuffle=False)
        results[final] = (model.get_weights(), [v.numpy() for v in optimizer.averaged_variables])
    kept, averages = results["averaged"]
    for k, a in zip(kept, averages):
        np.testing.assert_array_equal(k, a)
    last, _ = results["last"]
    assert max(np.abs(k - t).max() for k, t in zip(kept, last)) > 1e-4


def test_a_checkpoint_written_with_averaged_weights_resumes_from_the_training_weights(digits, tmp_path):
    x, y = digits
    model = dense_model()
    model.compile(optimizer=SWA(keras.optimizers.Adam(0.01), start_step=2, final_weights="last"), loss=LOSS)
    callback = SwapEvaluationWeights()
    model.fit(x[:256], y[:256], batch_size=64, epochs=1, verbose=0, shuffle=False, callbacks=[callback])
    callback.on_epoch_end(0)  # what fit does before a ModelCheckpoint listed after it
    assert model.optimizer.evaluation_weights_in_use
    path = tmp_path / "checkpoint.keras"
    model.save(path)
    averaged_in_file = model.get_weights()
    model.optimizer.use_training_weights()
    training = model.get_weights()

    loaded = keras.models.load_model(path)
    for a, b in zip(loaded.get_weights(), averaged_in_file):
        np.testing.assert_array_equal(a, b)
    assert loaded.optimizer.evaluation_weights_in_use
    resume = SwapEvaluationWeights()
    resume.set_model(loaded)
    resume.on_train_begin()
    for a, b in zip(loaded.get_weights(), training):
        np.testing.assert_array_equal(a, b)


def test_swap_callback_without_averaging_optimizer_names_the_problem(digits):
    x, y = digits
    model = dense_model()
    model.compile(optimizer="adam", loss=LOSS)
    with pytest.raises(ValueError, match="SwapEvaluationWeights needs an optimizer"):
        model.fit(x[:64], y[:64], verbose=0, callbacks=[SwapEvaluationWeights()])


@pytest.mark.slow
def test_averaged_weights_swap_under_mirrored_strategy(digits):
    x, y = digits
    strategy = mirrored_strategy()
    with strategy.scope():
        model = dense_model()
        optimizer = ExponentialMovingAverage(keras.optimizers.Adam(0.01), decay=0.9, final_weights="last")
        model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0)
    training = model.get_weights()
    averages = [v.numpy() for v in optimizer.averaged_variables]
    optimizer.use_evaluation_weights()
    for variable, average in zip(model.trainable_variables, averages):
        for replica in variable.value.values:
            np.testing.assert_array_equal(replica.numpy(), average)
    optimizer.use_training_weights()
    for now, before in zip(model.get_weights(), training):
        np.testing.assert_array_equal(now, before)


# ---------------------------------------------------------------------------
# Composition.
# ---------------------------------------------------------------------------
def test_wrappers_nest_and_round_trip_through_a_keras_file(digits, tmp_path):
    x, y = digits
    make = lambda: SkipNonFinite(  # noqa: E731
        Lookahead(chain(AGC(0.05), GradientCentralization(), GradientAccumulation(RAdam(0.01), steps=2)))
    )
    reference = dense_model()
    reference.compile(optimizer=make(), loss=LOSS)
    model = dense_model()
    model.compile(optimizer=make(), loss=LOSS)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 320, 32)]
    for xb, yb in batches:
        reference.train_on_batch(xb, yb)
    for xb, yb in batches[:5]:
        model.train_on_batch(xb, yb)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert [type(o).__name__ for o in iter_optimizers(loaded.optimizer)] == [
        "SkipNonFinite", "Lookahead", "Chain", "GradientAccumulation", "RAdam",
    ]
    for xb, yb in batches[5:]:
        loaded.train_on_batch(xb, yb)
    assert_weights_close(loaded, reference, rtol=1e-6, atol=1e-7)


def test_multi_optimizer_gives_layers_their_own_wrapped_optimizers(digits, tmp_path):
    """Discriminative learning rates: a frozen first layer, a Lookahead-wrapped head."""
    x, y = digits
    model = dense_model()
    initial = model.get_weights()
    first, head = model.layers
    optimizer = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            default_optimizer=Lookahead(RAdam(0.01), sync_period=2),
            optimizer_map={f"(.*/)?{first.name}/.*": keras.optimizers.SGD(0.0)},
        )
    )
    model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x[:512], y[:512], batch_size=64, epochs=1, verbose=0)
    weights = model.get_weights()
    np.testing.assert_array_equal(weights[0], initial[0])  # lr 0: untouched
    assert np.abs(weights[2] - initial[2]).max() > 1e-3
    lookahead = [o for o in optimizer.optimizers if isinstance(o, Lookahead)][0]
    assert int(lookahead.iterations.numpy()) == int(lookahead.inner.iterations.numpy()) == 8

    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    saved = [v.numpy() for v in model.optimizer.variables]
    restored = [v.numpy() for v in loaded.optimizer.variables]
    assert len(saved) == len(restored)
    for a, b in zip(saved, restored):
        np.testing.assert_array_equal(a, b)


def test_a_wrapper_around_a_multi_optimizer_steps_every_sub_optimizer(digits):
    x, y = digits
    model = dense_model()
    first, head = model.layers
    multi = keras.optimizers.MultiOptimizer(
        keras.optimizers.OptimizerMap(
            default_optimizer=keras.optimizers.Adam(0.01),
            optimizer_map={f"(.*/)?{first.name}/.*": keras.optimizers.Adam(0.001)},
        )
    )
    optimizer = GradientAccumulation(multi, steps=2)
    model.compile(optimizer=optimizer, loss=LOSS)
    model.fit(x[:512], y[:512], batch_size=32, epochs=1, verbose=0)
    assert [int(o.iterations.numpy()) for o in multi.optimizers] == [8, 8]


# ---------------------------------------------------------------------------
# Construction errors and docs.
# ---------------------------------------------------------------------------
def test_chain_reads_transformations_then_the_optimizer():
    optimizer = chain(ClipByGlobalNorm(1.0), GradientCentralization(), "adam")
    assert [type(t).__name__ for t in optimizer.transforms] == ["ClipByGlobalNorm", "GradientCentralization"]
    assert isinstance(optimizer.inner, keras.optimizers.Adam)
    with pytest.raises(ValueError, match="parts must end with an optimizer"):
        chain(ClipByGlobalNorm(1.0))
    with pytest.raises(ValueError, match="parts must end with an optimizer"):
        chain()
    with pytest.raises(ValueError, match=r"transforms\[0\]"):
        chain("sgd", "adam")


def test_wrappers_refuse_keras_options_that_belong_on_the_inner_optimizer():
    with pytest.raises(ValueError, match="weight_decay"):
        Lookahead("adam", weight_decay=0.1)
    used = keras.optimizers.Adam()
    used.build([keras.Variable(np.zeros(2))])
    with pytest.raises(ValueError, match="inner must be a new, unbuilt optimizer"):
        Lookahead(used)


@pytest.mark.parametrize(
    "transform,name,value",
    [
        (lambda v: AGC(clip_factor=v), "clip_factor", 0.0),
        (lambda v: AGC(epsilon=v), "epsilon", -1.0),
        (lambda v: ClipByGlobalNorm(v), "clipnorm", 0.0),
        (lambda v: GradientCentralization(exclude=v), "exclude", "bias"),
        (lambda v: GradientCentralization(exclude=v), "exclude", ["("]),
    ],
)
def test_gradient_transformations_validate_their_arguments(transform, name, value):
    with pytest.raises(ValueError, match=name):
        transform(value)


def test_excluded_variables_keep_their_gradient():
    kernel = keras.Variable(np.ones((3, 2)), name="kernel")
    grads = [tf.constant([[1.0, 2.0], [3.0, 4.0], [5.0, 9.0]], tf.float64)]
    centralized = GradientCentralization()(grads, [kernel])[0].numpy()
    np.testing.assert_allclose(centralized.mean(axis=0), [0.0, 0.0], atol=1e-12)
    kept = GradientCentralization(exclude=["kern"])(grads, [kernel])[0].numpy()
    np.testing.assert_array_equal(kept, grads[0].numpy())


# ---------------------------------------------------------------------------
# Multi-worker: real worker processes on localhost.
# ---------------------------------------------------------------------------
def _free_ports(count):
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_accumulation_under_multi_worker_mirrored_strategy_equals_one_large_batch(tmp_path):
    """Two worker processes x 16 samples x 4 micro-steps = one 128-sample batch.

    Tolerance: rtol 1e-5, atol 1e-6 after 6 updates (collective sums in float32).
    """
    import json
    import os
    import subprocess
    import sys

    from workers import accumulation

    tests_dir = os.path.dirname(__file__)
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "workers.accumulation", str(tmp_path / f"w{index}.npz")],
            cwd=tests_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        ))
    outputs = []
    for process in processes:
        try:
            out, _ = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for p in processes:
                p.kill()
            raise
        outputs.append(out)
    for index, (process, out) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, f"worker {index} failed:\n{out[-4000:]}"

    reference = accumulation.train(accumulate=False)
    for index in range(2):
        with np.load(tmp_path / f"w{index}.npz") as saved:
            weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        for got, want in zip(weights, reference):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    initial = [w.numpy() for w in accumulation.model().trainable_variables]
    assert max(np.abs(a - b).max() for a, b in zip(reference, initial)) > 1e-3


def test_learning_rate_reads_and_sets_the_inner_optimizers(digits):
    """What ReduceLROnPlateau and learning-rate logging rely on."""
    x, y = digits
    inner = RAdam(0.01)
    optimizer = SkipNonFinite(Lookahead(inner))
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    model = dense_model()
    model.compile(optimizer=optimizer, loss=LOSS)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, factor=0.5, min_delta=10.0)
    model.fit(x[:256], y[:256], batch_size=64, epochs=2, verbose=0, callbacks=[plateau])
    # Epoch 1 sets the best loss; epoch 2 misses it by min_delta: one halving.
    assert float(inner.learning_rate) == pytest.approx(0.005)
    with pytest.raises(ValueError, match="swa_learning_rate"):
        SWA(keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(keras.optimizers.Adam())),
            swa_learning_rate=0.1)
