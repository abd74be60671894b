"""Behaviour keras-optsuite's layers share, written once.

- **Rates in variables.** A drop rate is a non-trainable float32 weight, not
  a Python float: a float is frozen into the traced (and XLA-compiled) train
  function, a variable is read at every step. Assigning ``layer.rate = 0.2``
  (what :class:`keras_optsuite.callbacks.DropoutScheduler` does, every batch
  if asked) takes effect at the next step without retracing, and a ``.keras``
  file keeps the current value. :func:`rate_property` builds the attribute.
- **Replica-aware randomness.** :func:`random_uniform` draws from the
  layer's ``keras.random.SeedGenerator`` and folds in the replica id, so the
  replicas of a ``MirroredStrategy`` drop different units of their different
  examples (a plain ``SeedGenerator`` gives every replica the same mask).
- **Statistics averaged across replicas.** :class:`ReplicaMeanStatistics`
  makes every non-trainable weight a layer creates aggregate by ``"mean"``:
  under ``MirroredStrategy`` each replica computes its batch statistics, and
  the moving averages become the mean of the replicas' updates. Keras
  3.15.1's own ``BatchNormalization`` creates them with aggregation
  ``"none"``, and each replica then keeps its *own* moving mean (measured in
  ``tests/test_normalization.py``): the saved model holds replica 0's.
- **Kernel reparameterization.** :class:`KernelReparameterization` wraps a
  Dense or Conv layer and runs it with its kernel replaced by a function of
  the kernel (masked for DropConnect, ``g v / ||v||`` for weight
  normalization), through ``keras.StatelessScope``: the wrapped layer's own
  ``call`` does the arithmetic, and gradients reach the stored kernel.
"""

from __future__ import annotations

from typing import Any, Callable

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._upstream import AutocastScope, stateless_scope
from keras_optsuite._validation import check_fraction

RATE_DTYPE = "float32"


# -- rates in variables -------------------------------------------------------------
def add_rate_weight(layer: keras.layers.Layer, name: str, value: float) -> keras.Variable:
    """A non-trainable float32 scalar holding ``layer``'s rate ``name``."""
    return layer.add_weight(
        shape=(),
        dtype=RATE_DTYPE,
        initializer=keras.initializers.Constant(value),
        trainable=False,
        autocast=False,
        aggregation="only_first_replica",
        name=name,
    )


def rate_property(name: str, check: Callable[[str, Any], float] = check_fraction) -> property:
    """A ``layer.<name>`` attribute stored in the variable ``layer._<name>_weight``.

    Reading returns a Python float; assigning validates the value with
    ``check`` (a ``ValueError`` naming ``name``) and assigns the variable,
    eagerly, from outside the train function (a callback, a script).
    Construct the layer with ``self._<name>_weight = add_rate_weight(...)``.
    """
    attribute = f"_{name}_weight"

    def getter(self: keras.layers.Layer) -> float:
        # The shortest decimal that is this float32 (0.7, not 0.699999988...).
        return float(str(ops.convert_to_numpy(getattr(self, attribute))))

    def setter(self: keras.layers.Layer, value: Any) -> None:
        getattr(self, attribute).assign(check(name, value))

    return property(getter, setter, doc=f"The layer's current ``{name}`` (a float).")


def holds_rate_in_variable(layer: keras.layers.Layer, name: str) -> bool:
    """Whether ``layer.<name>`` is a :func:`rate_property` (assigning it needs no retrace)."""
    return isinstance(getattr(type(layer), name, None), property) and hasattr(layer, f"_{name}_weight")


def rate_tensor(variable: keras.Variable, dtype: Any) -> Any:
    """The rate held in ``variable``, read now, as a tensor of ``dtype``."""
    return ops.cast(ops.convert_to_tensor(variable), dtype)


# -- randomness ---------------------------------------------------------------------
def random_uniform(seed_generator: keras.random.SeedGenerator, shape: Any, dtype: Any = "float32") -> Any:
    """``U[0, 1)`` samples of ``shape`` from ``seed_generator``, different per replica.

    The generator advances once per call (as ``keras.random.uniform`` does);
    the replica id is added to the drawn seed, so under a
    ``tf.distribute`` strategy each replica draws its own mask, and with no
    strategy (replica 0) the draw is the generator's own.
    """
    seed = ops.cast(seed_generator.next(), "int64")
    context = tf.distribute.get_replica_context()  # None in a cross-replica context
    offset = 0 if context is None else context.replica_id_in_sync_group
    offset = ops.cast(offset, "int64")
    seed = ops.stack([seed[0], seed[1] + offset])
    seed = ops.cast(ops.mod(seed, 2**31 - 1), "int32")
    return tf.random.stateless_uniform(shape, seed=seed, dtype=dtype)


def bernoulli_keep_mask(
    seed_generator: keras.random.SeedGenerator, shape: Any, keep_probability: Any, dtype: Any
) -> Any:
    """A 0/1 mask of ``shape`` in ``dtype``: 1 with probability ``keep_probability``."""
    draws = random_uniform(seed_generator, shape, "float32")
    return ops.cast(draws < ops.cast(keep_probability, "float32"), dtype)


def inverted_scale(mask: Any, keep_probability: Any) -> Any:
    """``mask / keep_probability``, 0 where nothing is kept (``keep_probability = 0``)."""
    keep_probability = ops.cast(keep_probability, mask.dtype)
    return ops.where(keep_probability > 0, mask / ops.maximum(keep_probability, 1e-7), 0.0)


def is_training(training: Any) -> bool:
    """Keras passes ``training`` as a Python bool (or None outside fit/predict)."""
    return bool(training)


# -- statistics averaged across replicas ----------------------------------------------
class ReplicaMeanStatistics:
    """Mixin: every non-trainable weight the layer creates aggregates by ``"mean"``.

    Put it before the Keras layer class in the bases. An explicit
    ``aggregation=`` argument still wins.
    """

    def add_weight(self, *args: Any, **kwargs: Any) -> keras.Variable:
        if kwargs.get("trainable") is False:
            kwargs.setdefault("aggregation", "mean")
        return super().add_weight(*args, **kwargs)


# -- kernel reparameterization ------------------------------------------------------
class KernelReparameterization(keras.layers.Wrapper):
    """Base of wrappers that run a layer with its kernel replaced (not used directly).

    Subclasses implement ``_effective_kernel(kernel, training)`` returning the
    tensor the wrapped layer uses as its kernel this call; they may create
    their own weights in ``_build_parameters(input_shape)``, after the
    wrapped layer is built. Only the kernel is replaced: the bias, the
    activation and everything else are the wrapped layer's.
    """

    def __init__(self, layer: keras.layers.Layer, **kwargs: Any) -> None:
        if not isinstance(layer, keras.layers.Layer):
            raise ValueError(f"layer must be a keras.layers.Layer, got layer={layer!r}")
        # The wrapper's own weights (weight normalization's g) take the wrapped
        # layer's dtype, so wrapping a float64 Dense gives a float64 g.
        kwargs.setdefault("dtype", layer.dtype_policy)
        super().__init__(layer, **kwargs)

    def build(self, input_shape: Any = None) -> None:
        if not self.layer.built:
            self.layer.build(input_shape)
        kernel = getattr(self.layer, "kernel", None)
        if not isinstance(kernel, keras.Variable):
            raise ValueError(
                f"layer must have a `kernel` weight (Dense, Conv1D/2D/3D, ...), got "
                f"layer={self.layer.name!r} of type {type(self.layer).__name__}"
            )
        self._build_parameters(input_shape)
        self.built = True

    def _build_parameters(self, input_shape: Any) -> None:
        """Create the wrapper's own weights (override if it has any)."""

    def _effective_kernel(self, kernel: Any, training: bool) -> Any:
        raise NotImplementedError

    def _call_with(self, inputs: Any, replacements: list[tuple[keras.Variable, Any]]) -> Any:
        """Call the wrapped layer with the variables in ``replacements`` replaced.

        The replacements are in the variables' storage dtype (float32 under
        mixed precision); the wrapped layer casts them to its compute dtype
        itself, as it casts its variables.
        """
        outer = stateless_scope.get_stateless_scope()
        scope = keras.StatelessScope()
        # Filled directly: StatelessScope(state_mapping=...) casts each value to
        # `variable.dtype`, which is the autocast dtype inside an AutocastScope
        # (float16 under mixed precision; floatx, float32, even for a float64
        # variable under AutocastScope(None)).
        mapping = dict(outer.state_mapping) if outer is not None else {}  # keep an enclosing scope's (symbolic builds)
        mapping.update({id(variable): ops.convert_to_tensor(value) for variable, value in replacements})
        scope.state_mapping = mapping
        with scope:
            return self.layer(inputs)

    def call(self, inputs: Any, training: Any = None) -> Any:
        kernel = self.layer.kernel
        with AutocastScope(None):  # the stored float32 kernel, not a float16 copy
            value = self._effective_kernel(ops.convert_to_tensor(kernel.value), is_training(training))
        return self._call_with(inputs, [(kernel, value)])

    def compute_output_shape(self, input_shape: Any) -> Any:
        return self.layer.compute_output_shape(input_shape)
