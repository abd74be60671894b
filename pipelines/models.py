"""The model of a pipeline: a built-in architecture sized to the data, or the user's own.

Built-in (``[model] name``), each ending in ``outputs`` units (logits for
classification, values for regression and reconstruction):

- ``mlp``: Dense layers of ``hidden`` units;
- ``cnn1d``: the features as a 1-D signal; Conv1D blocks of ``hidden``
  filters (kernel 5, max-pooling by 2), global average pooling;
- ``autoencoder``: Dense encoder of ``hidden`` units down to the last,
  mirrored decoder back to the input's width (trained to reconstruct ``x``:
  a classic ill-conditioned problem for optimizers);
- ``sequence``: the features as a sequence of scalars, an LSTM per entry of
  ``hidden``, the last state to the output.

``[model] function = "module:function"`` is called with ``input_shape=``,
``outputs=`` and ``task=`` and returns an uncompiled ``keras.Model``.
"""

from __future__ import annotations

from typing import Any, Mapping

from keras_optsuite.pipelines.config import ConfigError
from keras_optsuite.pipelines.data import CLASSIFICATION, Data, resolve_function


def is_autoencoder(config: Mapping[str, Mapping[str, Any]]) -> bool:
    return config["model"]["function"] is None and config["model"]["name"] == "autoencoder"


def build_model(config: Mapping[str, Mapping[str, Any]], data: Data) -> Any:
    """A new, uncompiled model for ``data`` (weights drawn from Keras's global seed)."""
    import keras

    section = config["model"]
    if section["function"] is not None:
        model = resolve_function(section["function"], "model.function")(
            input_shape=data.input_shape, outputs=data.outputs, task=data.task
        )
        if not isinstance(model, keras.Model):
            raise ConfigError(f"model.function = {section['function']!r} must return a keras.Model, "
                              f"got {type(model).__name__}")
        return model
    hidden, activation, dropout = list(section["hidden"]), section["activation"], float(section["dropout"])
    inputs = keras.Input(data.input_shape)
    flat = int(inputs.shape[-1]) if len(data.input_shape) == 1 else None
    x = inputs

    def regularized(tensor: Any) -> Any:
        return keras.layers.Dropout(dropout)(tensor) if dropout else tensor

    name = section["name"]
    if name in ("cnn1d", "sequence"):
        x = keras.layers.Reshape((flat, 1))(x) if flat is not None else x
    if name == "mlp":
        for units in hidden:
            x = regularized(keras.layers.Dense(units, activation=activation)(x))
    elif name == "cnn1d":
        for filters in hidden:
            x = keras.layers.Conv1D(filters, 5, padding="same", activation=activation)(x)
            x = regularized(keras.layers.MaxPooling1D(2, padding="same")(x))
        x = keras.layers.GlobalAveragePooling1D()(x)
    elif name == "autoencoder":
        for units in hidden:
            x = keras.layers.Dense(units, activation=activation)(x)
        for units in reversed(hidden[:-1]):
            x = regularized(keras.layers.Dense(units, activation=activation)(x))
    elif name == "sequence":
        for index, units in enumerate(hidden):
            x = keras.layers.LSTM(units, return_sequences=index < len(hidden) - 1)(x)
            x = regularized(x)
    outputs = keras.layers.Dense(data.outputs)(x)
    return keras.Model(inputs, outputs, name=name)


def loss_and_metrics(data: Data) -> tuple[Any, list[str]]:
    """What ``compile`` gets: the loss of the task and the metrics reported."""
    import keras

    if data.task == CLASSIFICATION:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"]
    return keras.losses.MeanSquaredError(), ["mae"]


def default_metric(data: Data) -> str:
    """The score a pipeline compares when the config names none."""
    return "val_accuracy" if data.task == CLASSIFICATION else "val_loss"
