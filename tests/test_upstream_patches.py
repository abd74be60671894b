"""The patches of Keras code check the upstream code first, say why they are off, and are listed.

``keras_optsuite._upstream`` guards every patch (the closure train step, the
multi-worker ``fit`` fixes): applied only when Keras is in the version range
the patch was written for and a probe of the upstream source still finds the
code it was written against. These tests change the upstream code under the
guard and check that the patch stays off, that the closure optimizers then
explain how to train them, and that ``optsuite doctor`` reports it all.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_optsuite
from keras_optsuite import _upstream
from keras_optsuite.optimizers import SAM, closure
from keras_optsuite.optimizers.closure import (
    APPLIED,
    ClosureRequiredError,
    disable_closure_train_step,
    enable_closure_train_step,
)

OPTSUITE = Path(sys.executable).with_name("optsuite")
MULTI_WORKER_FIXES = ("symbolic_build", "reduce_logs", "backup_and_restore_save", "backup_and_restore_cleanup")


def _changed_upstream_train_step(self, data):
    """What a Keras release that rewrote its train step might hold: none of the probed code."""
    x, y = data
    return {"loss": self.compute_loss(x=x, y=y, y_pred=self(x))}


@pytest.fixture
def closure_step_removed(monkeypatch):
    """Keras's own ``train_step`` in place; the closure step reinstalled after the test."""
    trainer = _upstream.tensorflow_trainer.TensorFlowTrainer
    disable_closure_train_step()
    try:
        yield trainer
    finally:
        monkeypatch.undo()
        assert enable_closure_train_step() == {"train_step": APPLIED}
        assert trainer.train_step.__wrapped__.__module__.startswith("keras.")


def _sam_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=SAM(keras.optimizers.SGD(0.1), rho=0.05), loss="mse")
    return model


def test_closure_step_stays_off_when_upstream_train_step_changed(closure_step_removed, monkeypatch):
    trainer = closure_step_removed
    monkeypatch.setattr(trainer, "train_step", _changed_upstream_train_step)
    status = enable_closure_train_step()

    reason = (
        "not applied: upstream train_step changed "
        "('data_adapter_utils.unpack_x_y_sample_weight(data)' not found)"
    )
    assert status == {"train_step": reason}
    assert trainer.train_step is _changed_upstream_train_step, "the upstream code runs unchanged"
    assert keras_optsuite.diagnose(print_report=False)["train_step"] == reason

    # A closure optimizer stepped with gradients only says the integration is off, why,
    # and how to train it anyway.
    optimizer = SAM(keras.optimizers.SGD(0.1), rho=0.05)
    weight = keras.Variable(np.ones(3, dtype="float32"))
    with pytest.raises(ClosureRequiredError) as raised:
        optimizer.apply([keras.ops.ones(3)], [weight])
    message = str(raised.value)
    assert f"the model.fit integration is off ({reason})" in message
    assert "closure_train_step(self, data)" in message and "apply_with_closure" in message
    np.testing.assert_array_equal(weight.numpy(), np.ones(3), err_msg="no step was taken")


def test_closure_step_stays_off_outside_its_keras_range(closure_step_removed, monkeypatch):
    low, _ = closure.KNOWN_KERAS
    monkeypatch.setattr(closure, "KNOWN_KERAS", (low, _upstream.keras_version()))

    status = enable_closure_train_step()["train_step"]

    assert status == f"not applied: Keras {keras.__version__} is outside the checked range"
    with pytest.raises(ClosureRequiredError, match=r"integration is off \(not applied: Keras .* checked range\)"):
        _sam_model().fit(np.ones((4, 3)), np.ones((4, 1)), epochs=1, verbose=0)


def test_guard_refuses_a_patch_whose_upstream_source_changed():
    patch = _upstream.UpstreamPatch(
        name="test_only_patch",
        owner=lambda: keras.callbacks.BackupAndRestore,
        attribute="on_train_end",
        expected_source=("this line is not in Keras's source",),
        make=lambda original: original,
        fixes_upstream_bug=True,
    )
    versions = ((3, 0, 0), (99, 0, 0))
    before = keras.callbacks.BackupAndRestore.__dict__["on_train_end"]

    assert _upstream.why_refused(patch, versions) == "not needed: upstream code changed (faulty code not found)"
    assert _upstream.apply_patch(patch, versions).startswith("not needed")
    assert keras.callbacks.BackupAndRestore.__dict__["on_train_end"] is before
    moved = _upstream.UpstreamPatch("test_only_moved", lambda: keras.callbacks.BackupAndRestore,
                                    "no_such_method", (), lambda original: original)
    assert _upstream.why_refused(moved, versions) == "not applied: upstream code changed (no_such_method moved)"


def test_diagnose_lists_every_patch_and_private_hook(capsys):
    statuses = keras_optsuite.diagnose()
    report = capsys.readouterr().out

    assert statuses["train_step"] == APPLIED
    for name in ("train_step", *MULTI_WORKER_FIXES):
        assert statuses[name] == APPLIED, f"Keras {keras.__version__}: {name}: {statuses[name]}"
        assert f"{name}  " in report
    assert f"Keras {keras.__version__}" in report
    for owner, attribute, _ in _upstream.PRIVATE_HOOKS:
        assert hasattr(owner, attribute)
        assert f"{owner.__name__}.{attribute}:" in report
    assert statuses[_upstream.GRADIENT_REGISTRY_RELEASE] == APPLIED
    assert f"{_upstream.GRADIENT_REGISTRY_RELEASE}: {APPLIED}" in report


def test_diagnose_says_when_the_gradient_registry_is_gone(monkeypatch):
    from tensorflow.python.framework import ops

    monkeypatch.setattr(ops, "_gradient_registry", None)
    status = keras_optsuite.diagnose(print_report=False)[_upstream.GRADIENT_REGISTRY_RELEASE]

    assert status.startswith("off:") and "_gradient_registry" in status


@pytest.mark.slow
def test_optsuite_doctor_prints_the_patches():
    result = subprocess.run([str(OPTSUITE), "doctor"], capture_output=True, text=True, timeout=300)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"Keras {keras.__version__}, backend 'tensorflow'"
    for name in ("train_step", *MULTI_WORKER_FIXES):
        assert any(line.split() == [name, APPLIED] for line in lines), result.stdout
    assert "replaces train_step: model.fit hands closure optimizers" in result.stdout
    assert "TFOptimizer._all_reduce_sum_gradients:" in result.stdout
