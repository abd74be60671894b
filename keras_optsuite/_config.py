"""``get_config`` from the constructor's signature, and registry-row names, written once.

Optimizers, wrappers, schedules and layers store each constructor argument
under an attribute of the same name; their ``get_config`` reads those
attributes back (tuples become lists, as JSON would make them).
"""

from __future__ import annotations

import inspect
from typing import Any

import keras


def own_arg_names(cls: type[Any], skip: frozenset[str] = frozenset({"self", "kwargs"})) -> list[str]:
    """Constructor arguments of ``cls`` other than those in ``skip``."""
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in skip]


def own_config(obj: Any, skip: frozenset[str] = frozenset({"self", "kwargs"})) -> dict[str, Any]:
    """``{arg: value}`` for the constructor's arguments (stored under the same name)."""
    config = {}
    for name in own_arg_names(type(obj), skip):
        value = getattr(obj, name)
        config[name] = list(value) if isinstance(value, tuple) else value
    return config


class NamedByClass:
    """``name`` and ``registered_name`` of a registry row, read from its ``cls``.

    Shared by the optimizer, wrapper, layer and regularizer registries.
    """

    cls: type

    @property
    def name(self) -> str:
        return self.cls.__name__

    @property
    def registered_name(self) -> str:
        """The string Keras resolves to the class (``"keras_optsuite>Name"``)."""
        return keras.saving.get_registered_name(self.cls)
