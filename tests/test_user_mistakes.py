"""Names that cannot build an optimizer, misspelled arguments and settings that
would train silently wrong get an error or a warning naming them (issue 22)."""

from __future__ import annotations

import inspect
import re
import warnings

import keras
import numpy as np
import pytest

from keras_optsuite import optimizers
from keras_optsuite.optimizers import (
    AGC,
    REGISTRY,
    WRAPPERS,
    ClipByGlobalNorm,
    GradientCentralization,
    LearningRateFree,
    chain,
)

LEARNING_RATE_FREE = [spec for spec in REGISTRY.values() if issubclass(spec.cls, LearningRateFree)]


def _arguments(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_every_optimizer_name_builds_the_optimizer(spec):
    assert type(keras.optimizers.get(spec.registered_name)) is spec.cls


@pytest.mark.parametrize("spec", WRAPPERS.values(), ids=list(WRAPPERS))
def test_a_wrapper_name_alone_says_how_to_build_one(spec):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    for build in (lambda: keras.optimizers.get(spec.registered_name),
                  lambda: model.compile(optimizer=spec.registered_name, loss="mse")):
        with pytest.raises(ValueError, match="inner is required") as error:
            build()
        assert spec.registered_name in str(error.value)
    # The example in the message runs as written and builds this wrapper.
    example = re.search(r"e\.g\. (.+), and pass that object", str(error.value)).group(1)
    built = eval(example, vars(optimizers))  # noqa: S307 (our own message)
    assert type(built) is spec.cls
    model.compile(optimizer=built, loss="mse")


@pytest.mark.parametrize("spec", WRAPPERS.values(), ids=list(WRAPPERS))
def test_a_pipeline_config_says_a_wrapper_name_is_a_wrapper(spec):
    from keras_optsuite.pipelines._common import parse_contestant

    for name in (spec.name, spec.registered_name, spec.name.lower()):
        with pytest.raises(ValueError, match=f"name={re.escape(repr(name))} is a wrapper"):
            parse_contestant(name, "compare.optimizers")


@pytest.mark.parametrize("spec", WRAPPERS.values(), ids=list(WRAPPERS))
def test_a_misspelled_wrapper_argument_is_named_with_the_valid_ones(spec):
    arguments = _arguments(spec.cls)
    own = [a for a in arguments if a not in ("inner", "name")] or ["name"]
    intended = own[0]
    typo = intended[:-2] + intended[-1]  # one letter dropped: sync_perod, rh, ...
    with pytest.raises(ValueError) as error:
        spec.cls("adam", **{typo: 1})
    message = str(error.value)
    assert f"unknown argument {typo}=1 (did you mean {intended}?)" in message
    assert message.endswith("its arguments are " + ", ".join(arguments))
    assert "inner optimizer" not in message  # not the advice for Keras's own options


@pytest.mark.parametrize("spec", WRAPPERS.values(), ids=list(WRAPPERS))
def test_keras_options_on_a_wrapper_are_sent_to_the_inner_optimizer(spec):
    with pytest.raises(ValueError, match="does not take clipnorm, weight_decay: set them on the inner"):
        spec.cls("adam", weight_decay=0.1, clipnorm=1.0)


def test_an_unknown_argument_with_no_close_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as error:
        optimizers.Lookahead("adam", momentum=0.9, sync_perod=6)
    message = str(error.value)
    assert "unknown arguments momentum=0.9, sync_perod=6 (did you mean sync_period?)" in message
    assert "momentum=0.9 (did you mean" not in message


@pytest.mark.parametrize("spec", LEARNING_RATE_FREE, ids=[s.name for s in LEARNING_RATE_FREE])
def test_a_small_learning_rate_on_a_learning_rate_free_optimizer_warns(spec):
    with pytest.warns(UserWarning) as record:
        spec.cls(learning_rate=1e-3)
    (warning,) = record
    message = str(warning.message)
    assert f"{spec.name}(learning_rate=0.001)" in message
    assert "multiplies that estimate" in message and "Keep learning_rate=1.0" in message
    assert warning.filename == __file__  # points at the user's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec.cls()
        spec.cls(learning_rate=spec.tuned.get("learning_rate", 1.0))
        spec.cls(learning_rate=keras.optimizers.schedules.PolynomialDecay(1.0, 100, 0.0))


def test_an_exclude_pattern_matching_no_variable_warns_at_build_naming_it():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="hidden"),
                              keras.layers.Dense(2, name="predictions")])
    optimizer = chain(GradientCentralization(exclude=["hidden/bias"]),
                      AGC(0.01, exclude=["prediction/", "hidden/"]),
                      ClipByGlobalNorm(1.0, exclude=["predictons/kernel"]), "sgd")
    gradients = [np.ones(v.shape, "float32") for v in model.trainable_variables]
    with pytest.warns(UserWarning) as record:
        optimizer.apply(gradients, model.trainable_variables)
    messages = [str(w.message) for w in record]
    assert len(messages) == 2, messages
    assert messages[0].startswith("AGC(exclude=...): pattern 'prediction/' matches none")
    assert messages[1].startswith("ClipByGlobalNorm(exclude=...): pattern 'predictons/kernel'")
    assert "'sequential/hidden/kernel'" in messages[0]  # shows what paths look like
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.apply(gradients, model.trainable_variables)  # built: no repeat


def _stepped_shampoo(block_size: int, steps: int) -> optimizers.Shampoo:
    variable = keras.Variable(np.linspace(-1.0, 1.0, 200 * 200).reshape(200, 200).astype("float32"))
    optimizer = optimizers.Shampoo(0.01, block_size=block_size)
    optimizer.build([variable])
    for _ in range(steps):
        optimizer.apply([keras.ops.ones_like(variable)], [variable])
    return optimizer


def test_optimizer_state_of_another_layout_is_skipped_with_a_warning_naming_the_variable():
    """A .keras file saved by a version whose state layout changed loads; the optimizer starts fresh."""
    saved = _stepped_shampoo(block_size=256, steps=3)  # one 200x200 block
    store: dict = {}
    saved.save_own_variables(store)
    other = _stepped_shampoo(block_size=100, steps=0)  # four 100x100 blocks
    assert len(store) == len(other.variables)  # as many variables, of other shapes: Keras itself would raise
    before = [np.array(v) for v in other.variables]
    with pytest.warns(UserWarning, match=r"Skipping variable loading for optimizer 'shampoo', because its variable "
                                         r"\S+ has shape \(4, 100, 100\) whereas the saved one has shape "
                                         r"\(1, 200, 200\)"):
        other.load_own_variables(store)
    for old, variable in zip(before, other.variables):
        np.testing.assert_array_equal(np.array(variable), old)  # nothing half-loaded

    same = _stepped_shampoo(block_size=256, steps=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same.load_own_variables(store)
    assert int(same.iterations) == 3
    for i, variable in enumerate(same.variables):
        np.testing.assert_array_equal(np.array(variable), store[str(i)])
