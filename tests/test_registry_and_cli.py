"""The registry is complete and consistent; the command line and demo work."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import keras_optsuite
from keras_optsuite import optimizers
from keras_optsuite.optimizers import (
    REGISTRY,
    WRAPPERS,
    OptimizerWrapper,
    OptsuiteOptimizer,
    Ranger,
    get_spec,
)
from subjects import REFERENCES

REFERENCES_DIR = Path(__file__).parent / "references"


def test_every_shipped_optimizer_and_wrapper_class_is_in_a_registry():
    classes = [obj for _, obj in inspect.getmembers(optimizers, inspect.isclass)]
    optimizers_shipped = {
        c for c in classes if issubclass(c, OptsuiteOptimizer) and c is not OptsuiteOptimizer
    } | {Ranger}  # a composite: a Lookahead subclass with RAdam's arguments
    wrappers_shipped = {
        c for c in classes
        if issubclass(c, OptimizerWrapper) and not c.__name__.startswith("_")
        and c not in (OptimizerWrapper, Ranger)
    }
    assert optimizers_shipped == {spec.cls for spec in REGISTRY.values()}
    assert wrappers_shipped == {spec.cls for spec in WRAPPERS.values()}
    assert len(REGISTRY) >= 13 and len(WRAPPERS) >= 6


def _assert_registered_with_reference_and_citation(spec):
    """What every registry row (optimizer or wrapper) must have."""
    assert spec.registered_name == f"keras_optsuite>{spec.name}"
    assert keras.saving.get_registered_object(spec.registered_name) is spec.cls
    assert (REFERENCES_DIR / f"{REFERENCES[spec.name]}.py").is_file()
    assert spec.url.startswith("https://") and spec.paper
    assert spec.url in spec.cls.__doc__, "the docstring cites the method"


@pytest.mark.parametrize("spec", WRAPPERS.values(), ids=list(WRAPPERS))
def test_wrapper_row_is_complete(spec):
    _assert_registered_with_reference_and_citation(spec)
    doc = spec.cls.__doc__
    arguments = [
        name for name in inspect.signature(spec.cls.__init__).parameters
        if name not in ("self", "kwargs")
    ]
    for argument in arguments:
        assert f"{argument}:" in doc, f"the docstring documents {argument}"
    for arguments_set in (spec.example, *spec.variants):
        assert set(arguments_set) <= set(arguments)


@pytest.mark.parametrize("spec", REGISTRY.values(), ids=list(REGISTRY))
def test_registry_row_is_complete(spec):
    _assert_registered_with_reference_and_citation(spec)
    doc = spec.cls.__doc__
    assert "{{" not in doc, "the shared-arguments placeholder was filled in"
    for argument in spec.defaults:
        assert f"{argument}:" in doc, f"the docstring documents {argument}"
    assert set(spec.tuned) <= set(spec.defaults)
    # Methods whose update contains the weight decay test it as a variant.
    base = {"weight_decay"} if getattr(spec.cls, "decays_in_update", False) else set()
    for variant in spec.variants:
        assert set(variant) <= set(spec.defaults) | base


def test_get_spec_accepts_names_and_reports_unknown_ones():
    assert get_spec("radam") is get_spec("keras_optsuite>RAdam") is REGISTRY["RAdam"]
    with pytest.raises(ValueError, match="name='Radamm'"):
        get_spec("Radamm")


def test_learning_rate_accepts_ints_and_numpy_scalars():
    import numpy as np

    assert float(optimizers.RAdam(learning_rate=1).learning_rate) == 1.0
    assert float(optimizers.RAdam(learning_rate=np.float32(0.5)).learning_rate) == 0.5


def _optsuite(*args, cwd=None):
    exe = Path(sys.executable).with_name("optsuite")
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


def test_cli_version_help_and_list():
    assert _optsuite("--version").stdout.strip() == f"optsuite {keras_optsuite.__version__}"
    help_text = _optsuite("--help").stdout
    assert "demo" in help_text and "list" in help_text
    listing = _optsuite("list")
    assert listing.returncode == 0
    from keras_optsuite.layers import LAYERS, REGULARIZERS

    for spec in [*REGISTRY.values(), *WRAPPERS.values(), *LAYERS.values(), *REGULARIZERS.values()]:
        assert spec.registered_name in listing.stdout


@pytest.mark.slow
def test_demo_runs_the_packaged_bake_off_config(tmp_path):
    """The demo's own config, shrunk by --set overrides: the bake-off runs and says where its results are."""
    result = _optsuite(
        "demo", "--quiet", "--set", "compare.optimizers=['Adam', 'SGD']", "--set", "compare.trials=1",
        "--set", "training.epochs=1", "--set", "training.seeds=[0]", cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| rank | optimizer |" in result.stdout and "winner:" in result.stdout
    report = tmp_path / "outputs" / "compare" / "demo" / "report.html"
    assert f"report: {report}" in result.stdout and report.is_file()
    assert "optsuite ui" in result.stdout and (tmp_path / "mlruns" / "mlflow.db").is_file()


def test_the_demo_config_is_valid_and_fair():
    from keras_optsuite.cli import DEMO_CONFIG
    from keras_optsuite.pipelines._common import parse_contestant
    from keras_optsuite.pipelines.config import load_config

    config = load_config(DEMO_CONFIG)
    contestants = [parse_contestant(name, "compare.optimizers") for name in config["compare"]["optimizers"]]
    assert config["compare"]["baseline"] == "Adam" and {"Adam", "SGDNesterov", "AdamW"} <= {
        c.label for c in contestants}
    ours = [c for c in contestants if c.wrapper or c.family in REGISTRY]
    assert len(ours) >= 4, "at least four of this package's optimizers and wrappers"


def test_demo_rejects_an_unknown_optimizer_by_name(tmp_path):
    # -X importtime: a command that trains imports the whole library (the
    # positive control of tests/test_cli_startup.py, which checks the others do not).
    exe = Path(sys.executable).with_name("optsuite")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(exe), "demo", "--set", "compare.optimizers=['Adam', 'Nope']"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "compare.optimizers: Unknown optimizer name='Nope'" in result.stderr
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "mlruns").exists()
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
                if line.startswith("import time:")}
    assert {"tensorflow", "keras", "keras_optsuite.layers.registry"} <= imported
