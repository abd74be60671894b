"""Log a Keras model as an MLflow 3 logged model, with its signature and an input example."""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

EXAMPLE_ROWS = 2


def input_example(model: Any, training_data: Any = None) -> np.ndarray | None:
    """A few input rows for ``model``: the first rows of ``training_data``, else zeros.

    Zeros are built from the model's input shape. None when the model has
    several inputs, or no known input shape (then no logged model is made).
    """
    if training_data is not None:
        x = training_data[0] if isinstance(training_data, tuple) else training_data
        if isinstance(x, np.ndarray) and x.ndim >= 1:
            return np.asarray(x[:EXAMPLE_ROWS])
        return None
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        return None
    shape = tuple(inputs[0].shape[1:])
    if any(size is None for size in shape):
        return None
    return np.zeros((EXAMPLE_ROWS, *shape), dtype=str(inputs[0].dtype))


def pip_requirements() -> list[str]:
    """What loading the model needs, pinned (MLflow's inference would start a subprocess)."""
    import keras
    import tensorflow as tf

    from keras_optsuite import __version__

    return [f"keras=={keras.__version__}", f"tensorflow=={tf.__version__}", f"keras-optsuite=={__version__}"]


def _metrics_at_step(client: Any, run_id: str, model_id: str, step: int) -> list[Any]:
    """The run's metrics logged at ``step``, attributed to ``model_id`` (what ``Model.log`` links)."""
    from mlflow.entities import Metric

    linked: list[Any] = []
    for key in client.get_run(run_id).data.metrics:
        linked.extend(
            Metric(key=m.key, value=m.value, timestamp=m.timestamp, step=m.step, run_id=run_id, model_id=model_id)
            for m in client.get_metric_history(run_id, key)
            if m.step == step and m.model_id is None
        )
    return linked


def log_keras_model(
    client: Any,
    run_id: str,
    experiment_id: str,
    model: Any,
    name: str,
    example: np.ndarray,
    step: int = 0,
) -> str:
    """Log ``model`` as the logged model ``name`` of ``run_id``; returns its model id.

    What ``mlflow.keras.log_model`` does, through ``client`` alone: MLflow's
    ``Model.log`` resolves the tracking URI, the active run and the active
    experiment from process-wide state (and the private ``_use_tracking_uri``
    that pointed it at our store deleted ``MLFLOW_TRACKING_URI`` on exit), so
    it is not used. The model belongs to the run's experiment, is linked to
    the run as an output at ``step`` (with the run's metrics at that step),
    ends READY (FAILED if saving or uploading raises), and loads with
    ``mlflow.keras.load_model(f"models:/{model_id}")``. Two MLflow 3.17
    problems are avoided on the way: ``mlflow.keras.save_model`` writes the
    input example before creating the model directory (mlflow/mlflow#16183,
    open), so the directory is created first; and no serving-input
    validation runs (it loads the model again and predicts: a second ~1 s
    at every run's end).
    """
    import keras
    import mlflow.keras
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    # A direct call, not ``predict``: two rows need no data pipeline, and ``predict`` traces a
    # predict function for every model it sees (about 0.15 s each at a run's end).
    prediction = keras.ops.convert_to_numpy(model(example, training=False))
    signature = infer_signature(example, np.asarray(prediction))
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, model_type="keras")
    try:
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=int(step))])
        client.log_batch(run_id, metrics=_metrics_at_step(client, run_id, logged.model_id, int(step)))
        with tempfile.TemporaryDirectory(prefix="optsuite-model-") as directory:
            path = os.path.join(directory, "model")
            os.makedirs(path)
            description = Model(
                artifact_path=logged.artifact_location,
                model_uuid=logged.model_id,
                run_id=run_id,
                model_id=logged.model_id,
            )
            mlflow.keras.save_model(
                model,
                path,
                mlflow_model=description,
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements(),
            )
            client.log_model_artifacts(logged.model_id, path)
    except BaseException:
        client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
        raise
    client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
    return logged.model_id
