"""``optsuite`` starts without TensorFlow unless the command trains (issue 21, item 4),
and ``optsuite list`` shows the registries under headings."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from keras_optsuite import _catalog
from keras_optsuite.cli import build_parser
from keras_optsuite.optimizers import REGISTRY, WRAPPERS

OPTSUITE = Path(sys.executable).with_name("optsuite")


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple = ()) -> list[tuple]:
    """Every subcommand, nested ones included, read from the real parser."""
    paths = []
    for action in parser._actions:  # argparse has no public walk of subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append(prefix + (name,))
                paths.extend(_subcommand_paths(sub, prefix + (name,)))
    return paths


SUBCOMMANDS = _subcommand_paths(build_parser())
LIGHT_COMMANDS = [
    (), ("--help",), ("--version",), ("list",),
    ("launch", "--workers", "2", "--", sys.executable, "-c", "print('hello')"),
    *[(*path, "--help") for path in SUBCOMMANDS],
]


def _run_with_import_log(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``optsuite args`` under ``-X importtime``; the names of the modules it imported."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(OPTSUITE), *args],
                            capture_output=True, text=True, timeout=300)
    imported = {
        line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return result, imported


def test_every_subcommand_is_covered():
    assert {path[0] for path in SUBCOMMANDS} >= {"list", "demo", "tracking", "launch"}
    assert ("tracking", "replay") in SUBCOMMANDS


@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=[" ".join(a[:3]) or "no arguments" for a in LIGHT_COMMANDS])
def test_light_commands_do_not_import_tensorflow(args):
    result, imported = _run_with_import_log(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "keras_optsuite.cli" in imported  # the log is read correctly
    assert not {"tensorflow", "keras", "mlflow"} & imported
    # A command that trains does import them: test_registry_and_cli.py's
    # test_demo_rejects_an_unknown_optimizer_by_name reads the same log.


@pytest.mark.slow
def test_deferred_package_imports_finish_into_the_whole_package():
    script = (
        "import sys, keras_optsuite_cli as entry\n"
        "entry._defer_package_inits()\n"
        "import keras_optsuite.cli, keras_optsuite.distribute.launch\n"
        "assert 'tensorflow' not in sys.modules\n"
        "entry.finish_deferred_imports()\n"
        "import keras, keras_optsuite\n"
        "assert keras_optsuite.distribute.get_strategy and keras_optsuite.optimizers.RAdam\n"
        "assert keras.saving.get_registered_object('keras_optsuite>DropBlock2D')\n"
        "assert keras.optimizers.get('keras_optsuite>RAdam').name == 'radam'\n"
        "print('complete')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "complete", result.stderr[-3000:]


def test_the_list_catalog_matches_the_registries():
    assert _catalog.SECTIONS == _catalog.from_registries(), (
        "keras_optsuite/_catalog.py is stale: run .venv/bin/python -m keras_optsuite._catalog"
    )


def test_list_groups_names_under_headings():
    listing = subprocess.run([str(OPTSUITE), "list"], capture_output=True, text=True, timeout=60).stdout
    heading, under = None, {}
    for line in listing.splitlines():
        if line and not line.startswith(" "):
            heading = line.rstrip(":")
        elif line.strip():
            under[line.split()[0]] = heading
    for spec in REGISTRY.values():
        assert under[spec.registered_name] == f"Optimizers: {spec.family}"
    for spec in WRAPPERS.values():
        assert under[spec.registered_name] == _catalog.WRAPPERS_HEADING
    assert under["keras_optsuite>AGC"] == _catalog.TRANSFORMS_HEADING
    assert under["keras_optsuite>OneCycle"] == _catalog.SCHEDULES_HEADING
    assert under["keras_optsuite>DropBlock2D"] == _catalog.LAYERS_HEADING
    assert under["keras_optsuite>SoftOrthogonal"] == _catalog.REGULARIZERS_HEADING
