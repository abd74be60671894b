"""What XLA compiles an optimizer step into, where the step time depends on it.

Under XLA on a CPU each new state tensor is written by its own loop. When one
loop overwrites a state tensor while another still reads its old value, XLA's
copy insertion (TensorFlow's default, without region analysis) cannot order
the two and copies the tensor on every step: a copy cost about 0.4 of Keras
Adam's step on the README's benchmark (ADOPT: 1.41x with its copy, 1.02x
without). These tests compile a few steps on a small variable and count the
copies and loops over state-sized buffers in the optimized HLO, so a change
that brings back a copy or a loop fails here, not only in a benchmark.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_optsuite.optimizers import (
    ADOPT,
    COCOB,
    Adan,
    AggMo,
    DAdaptAdam,
    GradientAccumulation,
    SkipNonFinite,
)
from keras_optsuite.optimizers._base import ordered_after

SHAPE = (48, 40)  # a shape nothing else in the step has
STATE = re.escape(f"f32[{SHAPE[0]},{SHAPE[1]}]{{1,0}}")


def _loop_body_ops(make_optimizer):
    """``{opcode: count}`` of the state-sized instructions in the compiled step loop."""
    rng = np.random.default_rng(0)
    variable = keras.Variable(rng.normal(size=SHAPE).astype("float32"))
    gradient = tf.constant(rng.normal(size=SHAPE).astype("float32"))
    optimizer = make_optimizer()
    optimizer.build([variable])

    @tf.function(jit_compile=True)
    def run_steps():
        for _ in tf.range(3):
            optimizer.apply([gradient], [variable])

    hlo = run_steps.experimental_get_compiler_ir()(stage="optimized_hlo")
    computations = re.split(r"\n(?=\S.*\{\s*$)", hlo, flags=re.M)
    bodies = [c for c in computations if "while_body" in c.split("\n", 1)[0]]
    assert len(bodies) == 1, "expected one compiled while loop"
    ops: dict[str, int] = {}
    for opcode in re.findall(rf"= {STATE} ([a-z-]+)\(", bodies[0]):
        ops[opcode] = ops.get(opcode, 0) + 1
    return ops


@pytest.mark.parametrize(
    ("make_optimizer", "copies", "loops"),
    [
        # Keras's Adam: m, v and w, each in one loop, nothing copied.
        pytest.param(keras.optimizers.Adam, 0, 3, id="keras.Adam"),
        # Two stored velocities (the beta = 0 one is -g) and w.
        pytest.param(AggMo, 0, 3, id="AggMo"),
        # L, G, theta, the reward, the bet (the new displacement) and w; the
        # displacement is copied because w += Delta_new - Delta_old reads the
        # old one after the bet's loop wrote the new one. The reward is
        # computed once and read back by the bet (it was recomputed from the
        # old reward, which was then copied too).
        pytest.param(COCOB, 1, 6, id="COCOB"),
        # m (reading the old v), then v (ordered after m: in place, not copied), w.
        pytest.param(ADOPT, 0, 3, id="ADOPT"),
        # m, v, n, w, then the previous gradient (ordered after w, which comes
        # after both reads of the old one).
        pytest.param(Adan, 0, 5, id="Adan"),
        # m, v and s (v and s ordered after the sum that reads their old
        # values), w.
        pytest.param(DAdaptAdam, 0, 4, id="DAdaptAdam"),
        # Adam's three loops, each keeping the new or the old value; the
        # moments are written after the weights' loop, which reads the old ones.
        pytest.param(lambda: SkipNonFinite(keras.optimizers.Adam()), 0, 3, id="SkipNonFinite"),
        # The same, and the accumulator, written after the inner step read it.
        pytest.param(
            lambda: GradientAccumulation(keras.optimizers.Adam(), steps=3), 0, 4,
            id="GradientAccumulation",
        ),
    ],
)
def test_xla_step_has_no_more_copies_or_loops_than_its_algorithm_needs(make_optimizer, copies, loops):
    ops = _loop_body_ops(make_optimizer)
    assert ops.get("copy", 0) <= copies, ops
    assert ops.get("fusion", 0) <= loops, ops


@pytest.mark.parametrize(
    "earlier",
    [
        [2.0, -3.0, 0.0, 1e30, -1e-30, 5.0],
        [float("nan"), float("inf"), -float("inf"), float("nan"), 0.0, -0.0],
        float("nan"),
        -float("inf"),
    ],
    ids=["finite", "non-finite", "nan-scalar", "inf-scalar"],
)
def test_ordered_after_returns_the_value_exactly_whatever_comes_before(earlier):
    """The ordering changes nothing: every value (signed zeros, NaN, infinities) comes back bit for bit."""
    value = np.array([1.5, -0.0, float("nan"), float("inf"), -2.0, 3e-39], "float32")

    @tf.function(jit_compile=True)
    def order(value, earlier):
        return ordered_after(value, earlier)

    result = order(tf.constant(value), tf.constant(earlier, "float32")).numpy()
    assert result.tobytes() == value.tobytes()
