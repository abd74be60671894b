"""The layer registry is complete, every row is documented, and the README example runs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import keras
import numpy as np
import pytest

from keras_optsuite import layers, regularizers
from keras_optsuite.layers import LAYERS, REGULARIZERS
from keras_optsuite.layers.registry import KINDS

README = Path(__file__).parent.parent / "README.md"


def test_every_shipped_layer_and_regularizer_is_in_the_registry():
    shipped_layers = {
        obj for _, obj in inspect.getmembers(layers, inspect.isclass) if issubclass(obj, keras.layers.Layer)
    }
    shipped_regularizers = {
        obj for _, obj in inspect.getmembers(regularizers, inspect.isclass)
        if issubclass(obj, keras.regularizers.Regularizer)
    }
    assert shipped_layers == {spec.cls for spec in LAYERS.values()}
    assert shipped_regularizers == {spec.cls for spec in REGULARIZERS.values()}


@pytest.mark.parametrize("spec", [*LAYERS.values(), *REGULARIZERS.values()], ids=lambda s: s.name)
def test_row_is_registered_cited_and_documented(spec):
    assert spec.registered_name == f"keras_optsuite>{spec.name}"
    assert spec.kind in KINDS
    assert keras.saving.get_registered_object(spec.registered_name) is spec.cls
    assert spec.url in spec.cls.__doc__, "the docstring cites the paper"
    arguments = [p for p in inspect.signature(spec.cls.__init__).parameters if p not in ("self", "kwargs")]
    for argument in arguments:
        assert re.search(rf"\b{argument}\b", spec.cls.__doc__), f"{argument} is documented"
    assert f"`{spec.name}" in README.read_text() and spec.url in README.read_text()
    if spec.rate_attribute:
        # held in a variable, so DropoutScheduler can move it every batch
        assert isinstance(getattr(spec.cls, spec.rate_attribute), property)


def test_rates_lists_every_registered_layer_rate_in_a_model():
    inputs = keras.Input((8, 8, 2))
    hidden = layers.DropBlock2D(0.125, block_size=3, name="blocks")(inputs)
    hidden = keras.layers.Flatten()(hidden)
    branch = layers.DropConnect(keras.layers.Dense(128), rate=0.25, name="connect")(hidden)
    outputs = layers.StochasticDepth(0.75, name="depth")([hidden, branch])
    model = keras.Model(inputs, keras.layers.Dropout(0.5)(outputs))
    assert layers.rates(model) == {
        "blocks.rate": 0.125, "connect.rate": 0.25, "depth.survival_probability": 0.75,
    }


@pytest.mark.slow
def test_readme_layer_example_runs_and_learns(tmp_path, monkeypatch):
    text = README.read_text()
    block = text.split("<!-- layers-example -->\n```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md:layers-example", "exec"), namespace)  # noqa: S102
    assert namespace["history"].history["val_accuracy"][-1] > 0.75
    loaded = keras.models.load_model(tmp_path / "regularized.keras")
    x = namespace["x"][:64]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), namespace["model"].predict(x, verbose=0), rtol=1e-5, atol=1e-5)
