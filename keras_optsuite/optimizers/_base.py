"""Behaviour every keras-optsuite optimizer shares, written once.

Subclasses declare their per-variable state with ``_slot_names`` and write
the method's equations in ``_update_variable``; this base class creates the
slots, densifies sparse gradients, computes the 1-based step ``t``,
validates the shared arguments and builds ``get_config`` from the
constructor's signature (so each constructor argument must be stored under
an attribute of the same name; the contract suite's config round trip
catches one that is not).

Everything else common to all optimizers (decoupled ``weight_decay``,
``clipnorm``/``clipvalue``/``global_clipnorm``, EMA, loss scaling,
gradient accumulation and ``tf.distribute``) is inherited unchanged from
``keras.optimizers.Optimizer``.
"""

from __future__ import annotations

import inspect
import numbers
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._validation import check_non_negative, check_positive

_KERAS_ARGS = frozenset(
    inspect.signature(keras.optimizers.Optimizer.__init__).parameters
) | {"self", "kwargs", "learning_rate", "name"}

_DOC_PLACEHOLDER = "{{base_optimizer_keyword_args}}"


def _keras_base_args_doc() -> str:
    from keras.src.optimizers.optimizer import base_optimizer_keyword_args

    return base_optimizer_keyword_args


def dense_gradient(gradient: Any) -> Any:
    """A dense tensor for ``gradient`` (``IndexedSlices`` are scattered)."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient


def gradient_values(gradient: Any) -> Any:
    """The stored entries of ``gradient``: its ``values`` if it is ``IndexedSlices``."""
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def own_arg_names(cls: type, skip: frozenset[str] = _KERAS_ARGS) -> list[str]:
    """Constructor arguments of ``cls`` that are not Keras's shared ones."""
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in skip]


def own_config(obj: Any, skip: frozenset[str] = _KERAS_ARGS) -> dict[str, Any]:
    """``{arg: value}`` for the constructor's own arguments (stored under the same name)."""
    config = {}
    for name in own_arg_names(type(obj), skip):
        value = getattr(obj, name)
        config[name] = list(value) if isinstance(value, tuple) else value
    return config


class SlotState:
    """Per-variable optimizer state declared by name (mixed into optimizers).

    Subclasses list their slots in ``_slot_names`` and read them with
    ``_slot(name, variable)``, which also works on one device's copy of a
    variable inside ``tf.distribute`` updates.
    """

    def _slot_names(self) -> tuple[str, ...]:
        """Names of the per-variable state tensors (override)."""
        return ()

    def _slot_initializer(self, slot_name: str) -> Any:
        """Initializer of a slot (override for non-zero initial state)."""
        return "zeros"

    def _build_slots(self, var_list: list) -> None:
        names = list(self._slot_names())
        slots = ()
        if names:
            slots = self.add_optimizer_variables(
                var_list, names, [self._slot_initializer(n) for n in names]
            )
        self._slots = dict(zip(names, slots))

    def _slot(self, slot_name: str, variable: Any) -> Any:
        return self._slots[slot_name][self._get_variable_index(variable)]


class OptsuiteOptimizer(SlotState, keras.optimizers.Optimizer):
    """Base class of keras-optsuite optimizers (not used directly)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__doc__ and _DOC_PLACEHOLDER in cls.__doc__:
            cls.__doc__ = cls.__doc__.replace(_DOC_PLACEHOLDER, _keras_base_args_doc())

    def __init__(self, learning_rate: Any, **kwargs: Any) -> None:
        if isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool):
            # Keras rejects ints and NumPy scalars; a user writing
            # learning_rate=1 or np.float32(1e-3) means the obvious float.
            learning_rate = check_non_negative("learning_rate", learning_rate)
        if kwargs.get("weight_decay") is not None:
            check_non_negative("weight_decay", kwargs["weight_decay"])
        for name in ("clipnorm", "clipvalue", "global_clipnorm"):
            if kwargs.get(name) is not None:
                check_positive(name, kwargs[name])
        super().__init__(learning_rate=learning_rate, **kwargs)

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        self._build_slots(var_list)

    # -- update ------------------------------------------------------------
    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        # Sparse Embedding gradients: these methods' state is dense, so every
        # row's moments decay on every step (as in the papers).
        gradient = dense_gradient(gradient)
        dtype = variable.dtype
        self._update_variable(
            ops.cast(gradient, dtype),
            variable,
            ops.cast(learning_rate, dtype),
            ops.cast(self.iterations + 1, dtype),
        )

    def _update_variable(self, gradient: Any, variable: Any, learning_rate: Any, t: Any) -> None:
        """Apply one step of the method: ``t`` is the 1-based step number."""
        raise NotImplementedError

    def _is_first_step(self) -> Any:
        return ops.equal(self.iterations, 0)

    # -- config ------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self)}


def power(base: float, t: Any) -> Any:
    """``base ** t`` for a Python float base and a tensor step ``t``."""
    # convert_to_tensor, not cast: casting a Python float goes through float32.
    return ops.power(ops.convert_to_tensor(base, dtype=t.dtype), t)
