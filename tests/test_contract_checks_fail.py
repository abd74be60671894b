"""The contract's checks fail where they should: each runs here on a
deliberately broken optimizer and must raise ``AssertionError``.

A check that every shipped optimizer passes proves nothing until it is seen
failing on one that breaks its promise.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import assert_weights_close
from test_optimizer_contract import (
    check_clipvalue_equals_stepping_on_the_clipped_gradient,
    check_mixed_float16_trains_and_moves_every_state,
)

from subjects import Subject


class IgnoresClipvalue(keras.optimizers.Adam):
    """Adam that accepts ``clipvalue`` (config round trip and all) but never clips."""

    def _clip_gradients(self, grads):
        if self.clipvalue and not (self.clipnorm or self.global_clipnorm):
            return grads
        return super()._clip_gradients(grads)


class StaleUnderMixedPrecision(keras.optimizers.Adam):
    """Adam whose second moment stops updating under ``mixed_float16`` (as Sophia's
    curvature estimate once did); it then takes momentum-SGD steps, so it still
    trains and stays finite."""

    def build(self, var_list):
        super().build(var_list)
        self._stale = keras.config.dtype_policy().name == "mixed_float16"

    def update_step(self, gradient, variable, learning_rate):
        if not self._stale:
            return super().update_step(gradient, variable, learning_rate)
        gradient = keras.ops.cast(gradient, variable.dtype)
        momentum = self._momentums[self._get_variable_index(variable)]
        self.assign(momentum, self.beta_1 * momentum + (1.0 - self.beta_1) * gradient)
        self.assign_sub(variable, keras.ops.cast(learning_rate, variable.dtype) * momentum)


def _subject(cls, learning_rate):
    return Subject(
        id=cls.__name__, cls=cls, numeric_cases=({},),
        _build=lambda hyper, options: cls(**{**hyper, **options}),
        _reference=lambda hyper, lr: None,
        tuned={"learning_rate": learning_rate},
    )


def test_clipvalue_check_fails_on_an_optimizer_that_ignores_clipvalue():
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_clipvalue_equals_stepping_on_the_clipped_gradient(_subject(IgnoresClipvalue, 0.01))
    # and passes on the same class with Keras's clipping
    check_clipvalue_equals_stepping_on_the_clipped_gradient(_subject(keras.optimizers.Adam, 0.01))


@pytest.mark.slow
def test_mixed_precision_check_fails_on_a_slot_that_stays_put(digits):
    with pytest.raises(AssertionError, match="stays put under mixed_float16.*velocity"):
        check_mixed_float16_trains_and_moves_every_state(_subject(StaleUnderMixedPrecision, 0.01), digits)


def test_assert_weights_close_fails_on_lists_of_different_lengths():
    weights = [np.ones(3), np.zeros(2)]
    assert_weights_close(weights, [w.copy() for w in weights], rtol=0, atol=0)
    with pytest.raises(AssertionError, match="2 weights vs 1"):
        assert_weights_close(weights, weights[:1], rtol=0, atol=0)
    with pytest.raises(AssertionError, match="1 weights vs 2"):
        assert_weights_close(weights[:1], weights, rtol=0, atol=0)
