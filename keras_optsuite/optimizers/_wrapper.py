"""Behaviour every keras-optsuite optimizer wrapper shares, written once.

A wrapper holds an *inner* optimizer (any Keras optimizer, built-in or ours,
or another wrapper) and adds one idea. Three things make wrappers correct
where Keras's own options are not:

* **The wrapper owns the cross-replica gradient sum.** Under
  ``tf.distribute`` the outermost wrapper sums the gradients across replicas
  once, then every transform, clip, finiteness test and accumulator below it
  sees the global gradient (Keras clips per replica, before the sum). The
  optimizers inside are told not to sum again. Sparse gradients are
  deduplicated once, here, so inner updates see one row per index.
* **The inner optimizer is stepped through its own ``apply``**, so its
  ``iterations`` advance (bias correction and schedules keep moving) and its
  variables are part of ``wrapper.variables`` (saved with the model).
* **No synchronization inside a ``cond``.** A step that is taken only
  sometimes (accumulation, skipped non-finite steps) branches in the
  cross-replica context after the sum, as Keras's ``LossScaleOptimizer``
  does, which is what keeps it working under ``MirroredStrategy``.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any, ClassVar, Iterator, Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._config import own_arg_names, own_config
from keras_optsuite._learning_rate import LearningRateDelegate, set_learning_rate
from keras_optsuite._upstream import serialization_lib, take_over_gradient_sum
from keras_optsuite.optimizers._base import SlotState, compiled_by_xla, ordered_after, snapshot

# Arguments every wrapper handles itself (not part of its own config).
_WRAPPER_ARGS = frozenset({"self", "inner", "name", "kwargs"})


def _keras_optimizer_arguments() -> frozenset[str]:
    """The options every Keras optimizer takes (``weight_decay``, ``clipnorm``, ...)."""
    names: set[str] = set()
    for klass in keras.optimizers.Optimizer.__mro__:
        if "__init__" in vars(klass):
            names.update(
                p.name for p in inspect.signature(klass.__init__).parameters.values()
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
            )
    return frozenset(names - {"self", "name"})


# Keras options that act on the gradient or the step: they belong on the inner optimizer.
_KERAS_OPTIMIZER_ARGS = _keras_optimizer_arguments()

def iter_optimizers(optimizer: Any) -> Iterator[keras.optimizers.Optimizer]:
    """``optimizer`` and every optimizer nested inside it, outermost first.

    Looks through ``LossScaleOptimizer``, ``MultiOptimizer`` and
    keras-optsuite wrappers.
    """
    yield optimizer
    if isinstance(optimizer, OptimizerWrapper):
        yield from iter_optimizers(optimizer.inner)
    elif isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        yield from iter_optimizers(optimizer.inner_optimizer)
    elif isinstance(optimizer, keras.optimizers.MultiOptimizer):
        for sub in optimizer.optimizers:
            yield from iter_optimizers(sub)


def applied_updates(optimizer: Any) -> Any:
    """How many updates actually reached the weights (not calls to ``apply``).

    A wrapper's own ``iterations`` counts calls; skipped or accumulated
    micro-steps do not move the innermost optimizer's counter.
    """
    while isinstance(optimizer, OptimizerWrapper):
        optimizer = optimizer.inner
    return optimizer.iterations


def _take_over_gradient_sum(optimizer: Any) -> None:
    for nested in iter_optimizers(optimizer):
        if isinstance(nested, OptimizerWrapper):
            nested._sums_gradients = False
        elif not isinstance(nested, keras.optimizers.MultiOptimizer):
            # The gradients this optimizer receives are already the global sum.
            take_over_gradient_sum(nested)


def _resolve_inner(inner: Any) -> keras.optimizers.Optimizer:
    if isinstance(inner, (str, dict)):
        try:
            inner = keras.optimizers.get(inner)
        except ValueError as error:
            raise ValueError(f"inner must name a Keras optimizer, got inner={inner!r}") from error
    if not isinstance(inner, keras.optimizers.Optimizer):
        raise ValueError(
            f"inner must be a keras.optimizers.Optimizer instance, got inner={inner!r}"
        )
    if isinstance(inner, keras.optimizers.LossScaleOptimizer):
        raise ValueError(
            "inner must not be a LossScaleOptimizer: compile() adds loss scaling "
            "around the outermost optimizer under mixed precision, got "
            f"inner={inner!r}"
        )
    if inner.built:
        raise ValueError(
            f"inner must be a new, unbuilt optimizer; inner={inner.name!r} was already "
            "used (its state belongs to other variables)"
        )
    return inner


def deduplicate(gradient: Any) -> Any:
    """Sum the rows of an ``IndexedSlices`` gradient that share an index.

    An Embedding's gradient repeats a row index once per occurrence of the
    token. Updates that are not linear in the gradient (Adam squares it)
    must see each row's total, and Keras's built-in optimizers do not sum
    duplicates first: ``keras.optimizers.Adam`` squares each duplicate
    separately. TensorFlow 1's optimizers deduplicated the same way.
    """
    if not isinstance(gradient, tf.IndexedSlices):
        return gradient
    indices, positions = tf.unique(gradient.indices)
    values = tf.math.unsorted_segment_sum(gradient.values, positions, tf.shape(indices)[0])
    return tf.IndexedSlices(values, indices, gradient.dense_shape)


class OptimizerWrapper(SlotState, keras.optimizers.Optimizer):
    """Base class of optimizer wrappers (not used directly).

    Subclasses implement ``_apply_summed(grads, variables)``, which receives
    the cross-replica sum of the gradients and must step the inner optimizer
    with ``_apply_inner`` or ``_apply_inner_when``. The learning rate is the
    inner optimizer's: reading or setting ``wrapper.learning_rate`` reaches
    it (so ``ReduceLROnPlateau`` and learning-rate logging work).
    ``wrapper.iterations`` counts calls to ``apply``;
    ``applied_updates(wrapper)`` counts the updates that reached the weights.
    """

    #: How to build one, shown when a name or config without ``inner`` is
    #: deserialized (``"{cls}"`` is the class name); it must run as written.
    construction_example: ClassVar[str] = '{cls}("adam")'

    def __init__(self, inner: Any, name: str | None = None, **kwargs: Any) -> None:
        if kwargs:
            self._reject_arguments(kwargs)
        inner = _resolve_inner(inner)
        super().__init__(learning_rate=0.0, name=name)
        self.inner = inner
        self._sums_gradients = True
        _take_over_gradient_sum(inner)

    @classmethod
    def _reject_arguments(cls, kwargs: dict[str, Any]) -> None:
        valid = own_arg_names(cls)
        unknown = sorted(set(kwargs) - _KERAS_OPTIMIZER_ARGS)
        if unknown:
            described = []
            for argument in unknown:
                close = difflib.get_close_matches(argument, valid, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                described.append(f"{argument}={kwargs[argument]!r}{hint}")
            raise ValueError(
                f"{cls.__name__} got unknown argument{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(described)}; its arguments are {', '.join(valid)}"
            )
        names = ", ".join(sorted(kwargs))
        raise ValueError(
            f"{cls.__name__} does not take {names}: set them on the inner "
            "optimizer, where they apply to the gradient this wrapper hands it"
        )

    # -- delegation --------------------------------------------------------
    @property
    def learning_rate(self) -> Any:
        return self.inner.learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        # Also for a built-in Keras inner optimizer under a keras-optsuite schedule.
        set_learning_rate(self.inner, learning_rate)

    @property
    def variables(self) -> list:
        return self._variables[:] + self.inner.variables

    def set_weights(self, weights: Sequence[Any]) -> None:
        own = len(self._variables)
        super().set_weights(weights[:own])
        self.inner.set_weights(weights[own:])

    def finalize_variable_values(self, var_list: list) -> None:
        self.inner.finalize_variable_values(var_list)

    # -- state -------------------------------------------------------------
    def build(self, var_list: list) -> None:
        if self.built:
            return
        self.inner.build(var_list)
        # A MultiOptimizer that picks optimizers with a callable creates
        # them while building: hand those the summed gradients too.
        _take_over_gradient_sum(self.inner)
        super().build(var_list)
        self._build_slots(var_list)
        self._build_state(var_list)

    def _build_state(self, var_list: list) -> None:
        """Create state other than per-variable slots (override)."""

    # -- stepping ----------------------------------------------------------
    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        grads = list(grads)
        if not grads:
            return
        if trainable_variables is None:
            if not self.built:
                raise ValueError(
                    "trainable_variables must be given on the first call to apply(), "
                    "to build the optimizer"
                )
            trainable_variables = self._trainable_variables
        else:
            trainable_variables = list(trainable_variables)
            if not self.built:
                with keras.name_scope(self.name, caller=self):
                    self.build(trainable_variables)
        with keras.name_scope(self.name, caller=self):
            if self.loss_scale_factor is not None:  # set by a MultiOptimizer
                grads = [g if g is None else g / self.loss_scale_factor for g in grads]
            if self._sums_gradients:
                pairs = self._all_reduce_sum_gradients(list(zip(grads, trainable_variables)))
                grads = [g for g, _ in pairs]
            grads = [deduplicate(g) for g in grads]
            self._apply_summed(grads, list(trainable_variables))
        self._iterations.assign_add(1)

    def _apply_summed(self, grads: list, variables: list) -> None:
        """Step with the global gradient (override)."""
        raise NotImplementedError

    def _apply_inner(self, grads: list, variables: list) -> None:
        self.inner.apply(grads, variables)

    def _apply_inner_when(self, predicate: Any, grads: list, variables: list) -> Any:
        """Step the inner optimizer only where ``predicate`` (same on every replica) holds.

        Returns, under XLA, a scalar computed after the step (pass it to
        ``ordered_after`` for a wrapper state the inner step read), else None.
        """
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            if compiled_by_xla():
                return self._apply_inner_selected(predicate, grads, variables)
            ops.cond(predicate, lambda: self._apply_inner(grads, variables), lambda: None)
            return None

        def branch(distribution, predicate, grads, variables):
            # Every replica computed the same predicate from summed values.
            take_step = distribution.experimental_local_results(predicate)[0]

            def step():
                distribution.extended.call_for_each_replica(
                    self._apply_inner, args=(grads, variables)
                )

            # The cond lives in the cross-replica context: a replica-context
            # cond around the inner optimizer's merge_call is what breaks
            # Keras's own gradient accumulation (keras-team/keras#20582).
            ops.cond(take_step, step, lambda: None)

        tf.distribute.get_replica_context().merge_call(
            branch, args=(predicate, grads, variables)
        )
        return None

    def _apply_inner_selected(self, predicate: Any, grads: list, variables: list) -> Any:
        """``_apply_inner_when`` under XLA: step, then keep each new value only where ``predicate``.

        XLA copies every buffer a conditional may write (all weights and all
        inner state, on every step, taken or not), while a select on a scalar
        fuses into the loop that computes the new value. Every value is
        exactly the stepped one or the previous one. Returns a scalar computed
        after every value was written, for ``ordered_after`` on the wrapper's
        own state.
        """
        weights = {id(v): v for v in variables}
        state = [v for v in {id(v): v for v in self.inner.variables}.values() if id(v) not in weights]
        before = [snapshot(v) for v in [*weights.values(), *state]]
        self._apply_inner(grads, variables)
        # The weights first, then the inner state, ordered after them: the
        # weights' loops read the state from before the step (an inner step
        # such as Adam's recomputes its new moments from it), and a state
        # written by a loop that does not depend on those reads is copied
        # by XLA on every step. The order costs one element of each weight.
        after_weights = _first_elements(
            [_keep(variable, predicate, previous) for variable, previous in zip(weights.values(), before)]
        )
        kept_state = [
            _keep(variable, predicate, previous, after=after_weights)
            for variable, previous in zip(state, before[len(weights):])
        ]
        return after_weights + _first_elements(kept_state)

    # -- config ------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "inner": serialization_lib.serialize_keras_object(self.inner),
            **own_config(self, _WRAPPER_ARGS),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> OptimizerWrapper:
        config = dict(config)
        if "inner" not in config:
            # keras.optimizers.get("keras_optsuite>Lookahead") and
            # compile(optimizer="keras_optsuite>Lookahead") arrive here with {}.
            example = cls.construction_example.format(cls=cls.__name__)
            raise ValueError(
                f"{cls.__name__} wraps another optimizer and has no default one, so "
                f"inner is required: the name {keras.saving.get_registered_name(cls)!r} "
                f"alone cannot build it. Build it in code, e.g. {example}, and pass that "
                "object to compile(optimizer=...)"
            )
        inner = serialization_lib.deserialize_keras_object(
            config.pop("inner"), custom_objects=custom_objects
        )
        return cls(inner, **config)


def _keep(variable: Any, predicate: Any, previous: Any, after: Any = None) -> Any:
    """Write ``variable`` (just stepped) where ``predicate``, else ``previous``; return the value."""
    kept = ops.where(predicate, variable, previous)
    if after is not None and kept.dtype.is_floating:
        kept = ordered_after(kept, after)
    variable.assign(kept)
    return kept


def _first_elements(values: list) -> Any:
    """A float32 scalar computed from the first element of each value (for ``ordered_after``)."""
    total = ops.zeros((), "float32")
    for value in values:
        if value.dtype.is_floating and value.shape.num_elements():
            total = total + ops.cast(ops.reshape(value, (-1,))[0], "float32")
    return total


# set_learning_rate (keras_optsuite._learning_rate) sets the inner optimizer's learning rate.
LearningRateDelegate.register(OptimizerWrapper)
