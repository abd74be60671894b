"""Search spaces (keras_optsuite.tuning.space) and OptimizerHyperModel, without a tuner."""

from __future__ import annotations

import keras
import keras_tuner
import numpy as np
import pytest
from sklearn.datasets import load_digits

import keras_optsuite  # noqa: F401  (registers the optimizers, installs the closure step)
from keras_optsuite.optimizers import REGISTRY, ExponentialMovingAverage, Lookahead, SAM
from keras_optsuite.optimizers.registry import Searchable
from keras_optsuite.tuning import (
    BUILTINS,
    FAMILIES,
    OptimizerHyperModel,
    get_family,
    optimizer_space,
    regularization_space,
)

CLASSIC = ["SGD", "SGDMomentum", "SGDNesterov", "Adam", "AdamW", "Adagrad", "Adadelta", "RMSprop",
           "Nadam", "Lion"]


def _trial_hp(values):
    hp = keras_tuner.HyperParameters()
    hp.values = dict(values)
    return hp


def _active(hp):
    return {name: value for name, value in hp.values.items() if hp.is_active(name)}


def test_every_registry_row_and_classic_builtin_is_searchable():
    assert sorted(BUILTINS) == sorted(CLASSIC)
    assert set(REGISTRY) <= set(FAMILIES)
    for name, spec in REGISTRY.items():
        assert spec.search_space, f"{name} declares no search space"
        constructor = spec.defaults
        for parameter in spec.search_space:
            assert parameter.name in constructor, f"{name}: {parameter.name} is not a constructor argument"
            default = spec.search_defaults()[parameter.name]
            assert parameter.low <= default <= parameter.high, (name, parameter, default)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_each_family_builds_from_its_defaults_with_only_its_hyperparameters_active(name):
    family = FAMILIES[name]
    others = [other for other in FAMILIES if other != name][:3]
    hp = _trial_hp({"optimizer": name})
    optimizer = optimizer_space(hp, [name, *others])
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    active = _active(hp)
    # the conditional scope: the chosen family's hyperparameters only, at their defaults
    assert active == {"optimizer": name, **{f"{name}/{k}": v for k, v in family.defaults.items()}}
    assert any(p.name.startswith(f"{others[0]}/") for p in hp.space), "other families are declared"
    config = optimizer.get_config()
    for argument, default in {**family.defaults, **family.fixed}.items():
        assert config[argument] == pytest.approx(default, rel=1e-6), (argument, config[argument])
    if not family.needs_closure:
        # real steps move the weights: 6, as ADOPT's first step only sets v and ScheduleFreeRAdam's
        # first 5 only gather statistics; a random gradient, as centralization zeroes a constant one
        variable = keras.Variable(np.ones((3, 2), "float32"))
        gradient = np.random.default_rng(0).normal(size=(3, 2)).astype("float32")
        for _ in range(6):
            optimizer.apply([keras.ops.convert_to_tensor(gradient)], [variable])
        value = keras.ops.convert_to_numpy(variable)
        assert np.all(np.isfinite(value)) and not np.array_equal(value, np.ones((3, 2)))


def test_learning_rate_free_families_search_no_learning_rate():
    free = [name for name, spec in REGISTRY.items() if spec.family == "learning-rate-free"]
    assert sorted(free) == ["COCOB", "DAdaptAdam", "Prodigy"]
    for name in free:
        assert FAMILIES[name].learning_rate_free
        hp = _trial_hp({"optimizer": name})
        optimizer_space(hp, [name, "Adam"])
        assert not any(key.endswith("learning_rate") for key in _active(hp)), _active(hp)
    assert all(not FAMILIES[name].learning_rate_free for name in CLASSIC)


def test_bad_search_space_input_raises_value_error_naming_it():
    hp = keras_tuner.HyperParameters()
    with pytest.raises(ValueError, match="Unknown optimizer name='adamm'"):
        optimizer_space(hp, ["Adam", "adamm"])
    with pytest.raises(ValueError, match="optimizers=\\[\\]"):
        optimizer_space(hp, [])
    with pytest.raises(ValueError, match="range of 'learning_rate' is empty"):
        Searchable("learning_rate", 0.1, 0.1)
    with pytest.raises(ValueError, match="log-scale range needs low > 0"):
        Searchable("beta_1", 0.0, 0.9)
    with pytest.raises(ValueError, match="Unknown wrappers choice 'SWA'"):
        optimizer_space(hp, ["Adam"], wrappers=["none", "SWA"])
    with pytest.raises(ValueError, match="SAM, which cannot wrap the closure optimizers \\['LBFGS'\\]"):
        optimizer_space(hp, ["Adam", "LBFGS"], wrappers=["SAM"])
    with pytest.raises(ValueError, match="total_steps >= 1"):
        optimizer_space(hp, ["Adam"], schedules=["cosine"])
    with pytest.raises(ValueError, match="Unknown regularization layer 'Dropout'"):
        regularization_space(hp, ["Dropout"])
    with pytest.raises(ValueError, match="Unknown optimizer name='nope'"):
        OptimizerHyperModel(lambda hp: None, "mse", optimizers=["nope"])
    assert get_family("keras_optsuite>radam").name == "RAdam"


def test_wrappers_and_schedules_are_conditional_choices():
    total = 100
    for wrapper, cls in [("Lookahead", Lookahead), ("EMA", ExponentialMovingAverage), ("SAM", SAM)]:
        hp = _trial_hp({"optimizer": "Adam", "wrapper": wrapper})
        optimizer = optimizer_space(hp, ["Adam", "RAdam"], wrappers=["none", "Lookahead", "EMA", "SAM"])
        assert type(optimizer) is cls and type(optimizer.inner) is keras.optimizers.Adam
        assert {k.split("/")[0] for k in _active(hp) if "/" in k} == {"Adam", wrapper}
    peak = BUILTINS["Adam"].defaults["learning_rate"]
    for schedule in ["cosine", "warmup_stable_decay", "one_cycle"]:
        hp = _trial_hp({"optimizer": "Adam", "schedule": schedule})
        optimizer = optimizer_space(hp, ["Adam"], schedules=["constant", schedule], total_steps=total)
        warmup = int(round(hp.values[f"{schedule}/warmup_fraction"] * total))
        schedule_of = optimizer._learning_rate  # the schedule object Keras keeps
        rates = [float(schedule_of(step)) for step in (0, warmup, total - 1)]
        assert rates[0] < peak and rates[1] == pytest.approx(peak, rel=0.05) and rates[2] < 0.1 * peak, (
            schedule, rates)
    hp = _trial_hp({"optimizer": "Adam", "schedule": "constant"})
    optimizer = optimizer_space(hp, ["Adam"], schedules=["constant", "cosine"], total_steps=total)
    assert float(optimizer.learning_rate) == pytest.approx(peak)
    assert not any(key.endswith("warmup_fraction") for key in _active(hp))


def test_regularization_space_declares_weight_decay_and_layer_rates():
    hp = keras_tuner.HyperParameters()
    values = regularization_space(hp, ["DropConnect", "StochasticDepth"])
    assert values == {"weight_decay": 1e-4, "DropConnect.rate": 0.1,
                      "StochasticDepth.survival_probability": 0.8}
    assert sorted(hp.values) == ["regularization/DropConnect.rate",
                                 "regularization/StochasticDepth.survival_probability",
                                 "regularization/weight_decay"]
    hp = _trial_hp({"optimizer": "RAdam"})
    optimizer = optimizer_space(hp, ["RAdam"], weight_decay=values["weight_decay"])
    assert optimizer.weight_decay == pytest.approx(1e-4)


# -- OptimizerHyperModel: compile and fit the way the optimizer needs ---------------------------

@pytest.fixture(scope="module")
def digits():
    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype("float32")
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def _build_model(hp):
    return keras.Sequential([keras.Input((64,)), keras.layers.Dense(16, activation="tanh"),
                             keras.layers.Dense(10)])


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_hypermodel_measures_schedule_free_at_evaluation_weights(digits):
    (x, y), validation = digits
    hypermodel = OptimizerHyperModel(_build_model, LOSS, optimizers=["ScheduleFreeAdamW", "Adam"])
    hp = _trial_hp({"optimizer": "ScheduleFreeAdamW", "ScheduleFreeAdamW/learning_rate": 0.02})
    histories = []
    for fit in (hypermodel.fit, lambda hp, model, *a, **k: model.fit(*a, **k)):  # ours, then plain fit
        keras.utils.set_random_seed(0)
        model = hypermodel.build(hp)
        history = fit(hp, model, x, y, validation_data=validation, epochs=2, batch_size=64, verbose=0)
        histories.append(history.history["val_loss"])
        if len(histories) == 1:
            # fit ends with the averaged weights x in the model: the logged val_loss was measured there
            assert history.history["val_loss"][-1] == pytest.approx(model.evaluate(*validation, verbose=0),
                                                                    rel=1e-5)
    # plain fit validates at the training point y: another value, so the check above can fail
    assert histories[0][-1] != pytest.approx(histories[1][-1], rel=1e-3), histories


def test_hypermodel_fits_lbfgs_full_batch_and_sam_through_the_closure_step(digits):
    (x, y), validation = digits
    hypermodel = OptimizerHyperModel(_build_model, LOSS, optimizers=["LBFGS", "Adam"])
    hp = _trial_hp({"optimizer": "LBFGS"})
    model = hypermodel.build(hp)
    history = hypermodel.fit(hp, model, x, y, epochs=3, batch_size=32, verbose=0)
    assert int(model.optimizer.iterations) == 3, "one full-batch step per epoch"
    assert history.history["loss"][-1] < history.history["loss"][0]
    sam = OptimizerHyperModel(_build_model, LOSS, optimizers=["Adam"], wrappers=["none", "SAM"])
    hp = _trial_hp({"optimizer": "Adam", "wrapper": "SAM"})
    model = sam.build(hp)
    assert isinstance(model.optimizer, SAM)
    history = sam.fit(hp, model, x, y, epochs=2, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0]
