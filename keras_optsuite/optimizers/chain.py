"""Chain gradient transformations in front of an optimizer."""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import keras

from keras_optsuite._upstream import serialization_lib
from keras_optsuite.optimizers._wrapper import OptimizerWrapper
from keras_optsuite.optimizers.gradient_transforms import GradientTransformation


@keras.saving.register_keras_serializable(package="keras_optsuite")
class Chain(OptimizerWrapper):
    """Apply gradient transformations in order, then step ``inner``.

    Usually built with :func:`chain`, which reads in the order the gradient
    flows: ``chain(AGC(0.01), GradientCentralization(), keras.optimizers.Adam())``.
    The transformations see the gradient summed across replicas. Shipped
    transformations: ``GradientCentralization`` (Yong et al. 2020),
    ``AGC`` (Brock et al. 2021, https://arxiv.org/abs/2102.06171) and
    ``ClipByGlobalNorm``.

    Args:
        inner: the optimizer that receives the transformed gradients.
        transforms: :class:`GradientTransformation` instances, applied first to last.
        name: name of the optimizer.
    """

    construction_example = 'chain(ClipByGlobalNorm(1.0), "adam")'

    def __init__(
        self,
        inner: Any,
        transforms: Sequence[GradientTransformation] = (),
        name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, name=name, **kwargs)
        transforms = list(transforms)
        for i, transform in enumerate(transforms):
            if not isinstance(transform, GradientTransformation):
                raise ValueError(
                    f"transforms[{i}] must be a GradientTransformation, got {transform!r}"
                )
        self.transforms = transforms

    def _build_state(self, var_list: list) -> None:
        # A pattern that matches nothing excludes nothing: say so once, at build.
        paths = ", ".join(repr(getattr(v, "path", None) or v.name) for v in var_list[:4])
        for transform in self.transforms:
            for pattern in transform.unmatched_exclusions(var_list):
                warnings.warn(
                    f"{type(transform).__name__}(exclude=...): pattern {pattern!r} matches "
                    f"none of the {len(var_list)} variables, so it excludes nothing. Patterns "
                    f"are regexes searched in variable paths, such as {paths}",
                    UserWarning,
                    stacklevel=2,
                )

    def _apply_summed(self, grads: list, variables: list) -> None:
        for transform in self.transforms:
            grads = transform(grads, variables)
        self._apply_inner(grads, variables)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["transforms"] = [
            serialization_lib.serialize_keras_object(t) for t in self.transforms
        ]
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Chain:
        config = dict(config)
        config["transforms"] = [
            serialization_lib.deserialize_keras_object(t, custom_objects=custom_objects)
            for t in config.get("transforms", [])
        ]
        return super().from_config(config, custom_objects)


def chain(*parts: Any, name: str | None = None) -> Chain:
    """``chain(transform, ..., optimizer)``: transformations, then the optimizer that steps.

    The last part is any Keras optimizer (instance or name), including
    another wrapper: ``chain(ClipByGlobalNorm(1.0), Lookahead(RAdam()))``.

    Example:
    >>> model.compile(
    ...     optimizer=chain(ClipByGlobalNorm(1.0), GradientCentralization(), "adam"),
    ...     loss="mse")
    """
    if not parts:
        raise ValueError("parts must end with an optimizer, got no parts")
    *transforms, inner = parts
    if isinstance(inner, GradientTransformation):
        raise ValueError(f"parts must end with an optimizer, got a transformation last: {inner!r}")
    return Chain(inner, transforms, name=name)
