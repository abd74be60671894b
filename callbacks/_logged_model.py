"""Log a Keras model as an MLflow 3 logged model, with its signature and an input example."""

from __future__ import annotations

import os
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


class _KerasFlavor:
    """``mlflow.keras`` for ``Model.log``, with two MLflow 3.17 problems worked around.

    - ``mlflow.keras.save_model`` writes the input example before creating
      the model directory, so any ``log_model`` with an ``input_example``
      raises ``FileNotFoundError`` (mlflow/mlflow#16183, open): the directory
      is created first here.
    - ``Model.log`` validates the serving input by loading the model again
      and predicting (a second ~1 s at every run's end, with a progress bar);
      the callback's tests load the logged model instead.
    """

    __name__ = "mlflow.keras"

    @staticmethod
    def save_model(path: str, validate_serving_input: bool = True, **kwargs: Any) -> Any:
        import mlflow.keras

        os.makedirs(path, exist_ok=True)
        return mlflow.keras.save_model(path=path, **kwargs)


def log_keras_model(
    client: Any,
    tracking_uri: str,
    run_id: str,
    experiment_id: str,
    model: Any,
    name: str,
    example: np.ndarray,
    step: int = 0,
) -> str:
    """Log ``model`` as the logged model ``name`` of ``run_id``; returns its model id.

    The model belongs to the run's experiment (``Model.log`` alone would put
    it in the active or default experiment), is linked to the run as an
    output at ``step``, and is loadable with
    ``mlflow.keras.load_model(f"models:/{model_id}")``.
    """
    from mlflow.models import Model, infer_signature
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    prediction = model.predict(example, verbose=0)
    signature = infer_signature(example, np.asarray(prediction))
    logged = client.create_logged_model(experiment_id, name=name, source_run_id=run_id, model_type="keras")
    with _use_tracking_uri(tracking_uri):
        Model.log(
            None,
            name=name,
            flavor=_KerasFlavor,
            model=model,
            run_id=run_id,
            model_id=logged.model_id,
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            validate_serving_input=False,
            step=int(step),
        )
    return logged.model_id
