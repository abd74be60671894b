"""Prodigy and D-Adaptation: the estimated step size callbacks read, and
the paper-exact configurations.

The contract suite checks the trajectories against the NumPy references
(``paper_exact=True`` against the transcriptions of the papers'
algorithms); here the readable estimate ``estimated_step_size``
(``d * learning_rate``) is checked against the reference's ``d``, the
estimate is shown to grow from ``d0`` to the scale of the problem without
any tuning, and the paper-exact mode is shown to be a different algorithm
from the authors' code (so the contract's comparison can tell them apart).
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from references import dadapt_adam, dadapt_adam_defazio2023, prodigy, prodigy_mishchenko2023
from references._harness import reference_for

from keras_optsuite.optimizers import DAdaptAdam, LearningRateFree, Prodigy

CASES = [pytest.param(Prodigy, prodigy, id="Prodigy"), pytest.param(DAdaptAdam, dadapt_adam, id="DAdaptAdam")]
PAPER_CASES = [pytest.param(Prodigy, prodigy_mishchenko2023, prodigy, id="Prodigy"),
               pytest.param(DAdaptAdam, dadapt_adam_defazio2023, dadapt_adam, id="DAdaptAdam")]


def _quadratic(seed=3):
    rng = np.random.default_rng(seed)
    init = [rng.normal(size=(5, 4)), rng.normal(size=4)]
    target = [10.0 * rng.normal(size=(5, 4)), 10.0 * rng.normal(size=4)]

    def gradient(values):
        return [x - t for x, t in zip(values, target)]

    distance = np.sqrt(sum(np.sum((x - t) ** 2) for x, t in zip(init, target)))
    return init, gradient, distance


@pytest.mark.parametrize("cls,module", CASES)
def test_estimated_step_size_is_d_times_the_learning_rate(cls, module):
    init, gradient, _ = _quadratic()
    lr = 0.5
    optimizer = cls(learning_rate=lr)
    assert isinstance(optimizer, LearningRateFree)
    assert optimizer.estimated_step_size == pytest.approx(1e-6 * lr)  # d0 before building
    variables = [keras.Variable(x, dtype="float64") for x in init]
    reference = reference_for(module, lr)
    expected = init
    for _ in range(40):
        optimizer.apply([tf.constant(g) for g in gradient([v.numpy() for v in variables])], variables)
        expected = reference.step(expected, gradient(expected))
        assert optimizer.estimated_step_size == pytest.approx(reference.states["d"] * lr, rel=1e-9)


@pytest.mark.parametrize("cls", [Prodigy, DAdaptAdam])
def test_the_estimate_grows_from_d0_to_the_scale_of_the_problem(cls):
    """Starting 10^6 times too small, d reaches the distance's order of magnitude."""
    init, gradient, distance = _quadratic()
    optimizer = cls()
    variables = [keras.Variable(x, dtype="float32") for x in init]
    for _ in range(300):
        optimizer.apply([tf.constant(g, tf.float32) for g in gradient([v.numpy() for v in variables])],
                        variables)
    # Adam-type steps move each coordinate by about d: the estimate is the
    # per-coordinate distance, sqrt(n) times smaller than the Euclidean one.
    per_coordinate = distance / np.sqrt(24)
    assert per_coordinate / 10 < optimizer.estimated_step_size < 10 * per_coordinate
    loss = sum(np.sum(g**2) for g in gradient([v.numpy() for v in variables]))
    assert loss < 1e-2 * distance**2


def _run(optimizer, reference, init, gradient, steps):
    """``steps`` steps of both on the same gradients; the largest relative difference."""
    variables = [keras.Variable(x, dtype="float64") for x in init]
    expected = [np.array(x) for x in init]
    for _ in range(steps):
        optimizer.apply([tf.constant(g) for g in gradient([v.numpy() for v in variables])], variables)
        expected = reference.step(expected, gradient(expected))
    return max(np.max(np.abs(v.numpy() - e) / np.abs(e)) for v, e in zip(variables, expected))


@pytest.mark.parametrize("cls,paper,code", PAPER_CASES)
def test_paper_exact_follows_the_paper_and_not_the_authors_code(cls, paper, code):
    """Against the transcription of the paper's algorithm at rtol 1e-9, at the
    defaults; the authors' code (the default mode) ends at least 1000 times that
    far from it on the same 40 steps (measured: Prodigy 1.2e-4 relative, from its
    d_new * epsilon; D-Adaptation 62, from its inner product with the old v)."""
    init, gradient, _ = _quadratic()
    assert _run(cls(paper_exact=True), reference_for(paper, 1.0), init, gradient, 40) < 1e-9
    assert _run(cls(paper_exact=True), reference_for(code, 1.0), init, gradient, 40) > 1e-6


def test_prodigy_paper_exact_stores_the_papers_sums():
    """The code's r and s are the paper's times 1 / (d0 (1 - sqrt(beta_2))), which
    cancels in d_hat = r / |s|_1: after two steps (the first one leaves d = d0, so both
    have taken the same steps) the two numerators differ by exactly that factor."""
    init, gradient, _ = _quadratic()
    numerators = {}
    for paper_exact in (False, True):
        optimizer = Prodigy(paper_exact=paper_exact)
        variables = [keras.Variable(x, dtype="float64") for x in init]
        reference = reference_for(prodigy, 1.0, paper_exact=paper_exact)
        expected = init
        for _ in range(2):
            optimizer.apply([tf.constant(g) for g in gradient([v.numpy() for v in variables])], variables)
            expected = reference.step(expected, gradient(expected))
        numerators[paper_exact] = float(optimizer._scalars["numerator"].numpy())
        assert numerators[paper_exact] == pytest.approx(reference.states["r"], rel=1e-9)
    assert numerators[True] != 0.0
    factor = 1.0 / (1e-6 * (1.0 - np.sqrt(0.999)))
    assert numerators[False] == pytest.approx(factor * numerators[True], rel=1e-9)


@pytest.mark.parametrize(
    "cls,arguments,name",
    [(Prodigy, {"paper_exact": True, "beta_3": 0.5}, "beta_3"),
     (Prodigy, {"paper_exact": True, "d_coef": 2.0}, "d_coef"),
     (Prodigy, {"paper_exact": True, "growth_rate": 1.02}, "growth_rate"),
     (Prodigy, {"paper_exact": True, "use_bias_correction": True}, "use_bias_correction"),
     (Prodigy, {"paper_exact": True, "safeguard_warmup": True}, "safeguard_warmup"),
     (Prodigy, {"paper_exact": "yes"}, "paper_exact"),
     (DAdaptAdam, {"paper_exact": True, "growth_rate": 1.02}, "growth_rate"),
     (DAdaptAdam, {"paper_exact": True, "use_bias_correction": True}, "use_bias_correction"),
     (DAdaptAdam, {"paper_exact": 1}, "paper_exact")],
)
def test_paper_exact_refuses_options_the_paper_lacks(cls, arguments, name):
    with pytest.raises(ValueError, match=name):
        cls(**arguments)


@pytest.mark.parametrize("cls", [Prodigy, DAdaptAdam])
def test_paper_exact_round_trips_through_the_config(cls):
    optimizer = cls(paper_exact=True, epsilon=0.25)
    config = optimizer.get_config()
    assert config["paper_exact"] is True
    rebuilt = cls.from_config(config)
    assert rebuilt.paper_exact is True and rebuilt.epsilon == 0.25
    assert cls().get_config()["paper_exact"] is False
