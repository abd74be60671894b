"""Tracked fits leave MLflow's process-wide state as they found it (issue 24).

Several tracked fits run in one process, as the tuner and the bake-off run
trials, for each way of naming the store: ``MLFLOW_TRACKING_URI``,
``mlflow.set_tracking_uri`` and ``tracking_uri=``, against a SQLite store
that is not the default and a real ``mlflow server`` on 127.0.0.1. Every run
lands in the store it was told to (none in the default ``./mlruns``), the
user's own ``mlflow`` calls afterwards too, and the environment and
``mlflow.get_tracking_uri()`` are the same after each fit as before it.
Before the fix, the first run's logged model (MLflow's private
``_use_tracking_uri``) deleted ``MLFLOW_TRACKING_URI`` and the second run
went to ``./mlruns/mlflow.db``.
"""

from __future__ import annotations

import os

import keras
import mlflow
import pytest

from keras_optsuite.callbacks.mlflow_tracking import MLflowTracking

pytestmark = pytest.mark.xdist_group("tracking_process_state")  # one server for the module

FITS = 2
ROWS = 256


def _process_state() -> dict:
    return {
        "environment": os.environ.get("MLFLOW_TRACKING_URI"),
        "is_set": mlflow.is_tracking_uri_set(),
        "tracking_uri": mlflow.get_tracking_uri(),
        "active_run": mlflow.active_run(),
    }


def _fit(digits, tracking):
    x, y = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:ROWS], y[:ROWS], batch_size=64, epochs=1, verbose=0, callbacks=[tracking])


@pytest.mark.parametrize("store", ["sqlite", "server"])
@pytest.mark.parametrize("naming", ["MLFLOW_TRACKING_URI", "set_tracking_uri", "tracking_uri="])
def test_every_fit_lands_where_it_was_told_and_the_process_state_is_unchanged(
    digits, tmp_path, monkeypatch, request, store, naming
):
    monkeypatch.chdir(tmp_path)  # the default store would be ./mlruns/mlflow.db here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if store == "sqlite":
        (tmp_path / "team").mkdir()
        uri = f"sqlite:///{(tmp_path / 'team' / 'team.db').as_posix()}"
    else:
        uri = request.getfixturevalue("mlflow_server").uri
    if naming == "MLFLOW_TRACKING_URI":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    elif naming == "set_tracking_uri":
        mlflow.set_tracking_uri(uri)
    experiment = f"process-state-{store}-{naming}"
    before = _process_state()
    run_ids = []
    for fit in range(FITS):
        tracking = MLflowTracking(
            experiment=experiment,
            run_name=f"fit-{fit}",
            tracking_uri=uri if naming == "tracking_uri=" else None,
            training_data=digits[0][:ROWS],
        )
        _fit(digits, tracking)
        run_ids.append(tracking.run_id)
        assert _process_state() == before, f"after fit {fit}"

    client = mlflow.MlflowClient(uri)
    for fit, run_id in enumerate(run_ids):
        run = client.get_run(run_id)  # raises if the run is in another store
        assert run.info.run_name == f"fit-{fit}" and run.info.status == "FINISHED"
        names = sorted(client.get_logged_model(o.model_id).name for o in run.outputs.model_outputs)
        assert names == ["best", "final"], f"fit {fit}'s logged models"
        assert client.get_experiment(run.info.experiment_id).name == experiment

    if naming != "tracking_uri=":  # the user's own fluent calls go to the store they named
        with mlflow.start_run(experiment_id=client.get_run(run_ids[0]).info.experiment_id) as own:
            mlflow.log_metric("after_the_fits", 1.0)
        assert client.get_run(own.info.run_id).data.metrics == {"after_the_fits": 1.0}
    assert not (tmp_path / "mlruns" / "mlflow.db").exists(), "nothing goes to the default store"
    assert not (tmp_path / "mlflow.db").exists(), "nothing goes to MLflow's own default store"


def test_logged_models_never_touch_the_tracking_uri_even_when_logging_fails(digits, tmp_path, monkeypatch):
    """A logged model that fails to save leaves the URI alone too (nothing to restore)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{(tmp_path / 'elsewhere.db').as_posix()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = _process_state()

    import mlflow.keras

    def broken_save_model(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(mlflow.keras, "save_model", broken_save_model)
    tracking = MLflowTracking(experiment="process-state-failure")
    _fit(digits, tracking)
    assert _process_state() == before
    client = mlflow.MlflowClient(uri)
    run = client.get_run(tracking.run_id)
    assert run.info.status == "FINISHED"
    statuses = {client.get_logged_model(o.model_id).status for o in run.outputs.model_outputs}
    assert statuses == {"FAILED"}, "a logged model that could not be saved says so"
