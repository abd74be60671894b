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
import warnings
from typing import Any, Callable, ClassVar, Sequence

import keras
import tensorflow as tf
from keras import ops

from keras_optsuite._config import own_config
from keras_optsuite._learning_rate import set_learning_rate
from keras_optsuite._validation import check_non_negative, check_positive

_KERAS_ARGS = frozenset(
    inspect.signature(keras.optimizers.Optimizer.__init__).parameters
) | {"self", "kwargs", "learning_rate", "name"}

_DOC_PLACEHOLDER = "{{base_optimizer_keyword_args}}"


def _keras_base_args_doc() -> str:
    from keras_optsuite._upstream import base_optimizer_keyword_args

    return base_optimizer_keyword_args


def dense_gradient(gradient: Any) -> Any:
    """A dense tensor for ``gradient`` (``IndexedSlices`` are scattered)."""
    if isinstance(gradient, tf.IndexedSlices):
        return tf.convert_to_tensor(gradient)
    return gradient


def gradient_values(gradient: Any) -> Any:
    """The stored entries of ``gradient``: its ``values`` if it is ``IndexedSlices``."""
    return gradient.values if isinstance(gradient, tf.IndexedSlices) else gradient


def snapshot(value: Any) -> Any:
    """The current value of a variable as a tensor that later assignments do not change.

    ``keras.ops.convert_to_tensor`` can hand back the variable itself, a live
    view (the bug in Keras 3.15.1's ScheduleFreeAdamW): read it instead.
    """
    if isinstance(value, keras.Variable):
        value = value.value
    return tf.identity(value)


def assign_cast(target: Any, value: Any) -> None:
    """``target.assign(value)`` with ``value`` cast to ``target``'s dtype.

    The per-variable function for ``_update_each(assign_cast, targets,
    per_variable=(values,))``, which writes a list of values into a list of
    variables (slots, weights, snapshots) on every device.
    """
    target.assign(ops.cast(value, target.dtype))


def compiled_by_xla() -> bool:
    """Whether the step being traced will be compiled by XLA (``jit_compile=True``)."""
    return tf.__internal__.get_enclosing_xla_context() is not None


def sum_all(tensor: Any) -> Any:
    """The sum of every entry of ``tensor``, a scalar: ``ops.sum(tensor)``, faster under XLA on CPU.

    XLA's CPU reduction adds one element after another (about 1 ns per
    element here: a 1M-entry sum costs 3-6 elementwise passes), while a
    matrix-vector product against ones runs vectorized: 1.4-1.7x faster on
    a 1024x1024 tensor (benchmarks/step_time.py --jit). Without XLA, or on
    a GPU, the plain reduction is already vectorized.
    """
    if not compiled_by_xla() or len(tensor.shape) < 2 or _has_accelerator():
        return ops.sum(tensor)
    rows = ops.reshape(tensor, (-1, tensor.shape[-1]))
    return ops.sum(tf.linalg.matvec(rows, ops.ones((tensor.shape[-1],), tensor.dtype)))


def ordered_after(value: Any, earlier: Any) -> Any:
    """``value``, exactly, computed after ``earlier`` under XLA; ``value`` itself without XLA.

    Under XLA on a CPU each new state tensor is written by its own loop, and
    TensorFlow's default copy insertion copies a state tensor on every step
    when one loop overwrites it while another loop still reads its old value,
    unless the overwriting loop depends on the reading one (such a copy cost
    ADOPT about 0.4 of Adam's step; benchmarks/step_time.py --jit). Pass as
    ``earlier`` a value computed by the loop that reads the old state (a new
    momentum, a sum): XLA then writes the result after ``earlier``, in place.
    It adds no pass over memory: the result depends on one element of
    ``earlier``, which is enough to order the loops.
    """
    if not compiled_by_xla():
        return value
    if len(earlier.shape):  # one element of it orders the loops as well, and reads nothing more
        earlier = ops.reshape(earlier, (-1,))[0]
    earlier = ops.cast(earlier, value.dtype)
    # A zero (never NaN) that XLA cannot tell from data, so the select below
    # always takes ``value`` and is still not folded away. Its two tensor
    # operands keep XLA from recomputing it in every loop that reads it (a
    # select on a scalar is recomputed, reading the old state again).
    zero = ops.where(ops.isfinite(earlier), earlier, 0.0) * 0.0
    return ops.where(ops.isnan(zero), value * zero, value)


def _has_accelerator() -> bool:
    return bool(tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("TPU"))


def choose(predicate: Any, if_true: Callable[[], Any], if_false: Callable[[], Any]) -> Any:
    """``if_true()`` if the scalar ``predicate`` holds, else ``if_false()``, at the lower cost.

    For a choice made once per step (the first step, RAdam's rectification).
    Without XLA every op is a pass over its tensor: ``cond`` runs only the
    chosen branch. XLA copies the tensors a conditional returns but fuses a
    select on a scalar into the surrounding elementwise loop: ``where`` there.
    """
    if compiled_by_xla():
        return ops.where(predicate, if_true(), if_false())
    return ops.cond(predicate, if_true, if_false)


def _tf_variable(variable: Any) -> Any:
    return variable.value if isinstance(variable, keras.Variable) else variable


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
        self._slots: dict[str, Any] = dict(zip(names, slots))

    def _slot(self, slot_name: str, variable: Any) -> Any:
        return self._slots[slot_name][self._get_variable_index(variable)]

    def load_own_variables(self, store: Any) -> None:
        """Keras's restore of the saved state, skipping a state of another layout as a whole.

        Keras skips (with a warning) a saved state with another number of
        variables; one with as many variables of other shapes (saved by a
        version whose state layout has changed since, e.g. Shampoo's blocks
        before issue 21) would raise in the middle of the assignment, and
        ``load_model`` with it. It is skipped the same way: a warning that
        names the first mismatch, and the optimizer starts fresh.
        """
        variables = self.variables
        if len(store.keys()) == len(variables):
            for i, variable in enumerate(variables):
                saved = tuple(store[str(i)].shape)
                if saved != tuple(variable.shape):
                    warnings.warn(
                        f"Skipping variable loading for optimizer '{self.name}', because its variable "
                        f"{variable.path} has shape {tuple(variable.shape)} whereas the saved one has shape "
                        f"{saved} (state saved with another layout, e.g. by an earlier version of "
                        "keras-optsuite). The optimizer starts from a fresh state.",
                        stacklevel=2,
                    )
                    return
        super().load_own_variables(store)

    def _moving_average(self, average: Any, value: Any, decay: Any) -> None:
        """``average = decay average + (1 - decay) value``, in place.

        Written as Keras's Adam writes it, ``average += (value - average) (1 - decay)``:
        two elementwise kernels and an in-place add, where the textbook form
        takes three kernels and a copy (without XLA every kernel is a pass
        over the tensor; benchmarks/step_time.py).
        """
        self.assign_add(average, (value - average) * (1.0 - decay))

    def _update_each(
        self,
        update: Callable[..., None],
        variables: Sequence[Any],
        per_variable: Sequence[Sequence[Any]] = (),
        shared: Sequence[Any] = (),
    ) -> None:
        """Run ``update(variable, *per_variable[i], *shared)`` on every device's copy.

        Inside ``update``, ``self._slot(name, variable)`` and ``self.assign``
        address the same device's copy of the state.
        """
        tf_variables = [_tf_variable(v) for v in variables]
        count = len(per_variable)

        def merge(distribution, tf_variables, *args):
            columns, common = args[:count], tuple(args[count:])
            for i, variable in enumerate(tf_variables):
                distribution.extended.update(
                    variable,
                    update,
                    args=tuple(column[i] for column in columns) + common,
                    group=False,
                )

        tf.__internal__.distribute.interim.maybe_merge_call(
            merge,
            self._distribution_strategy,
            tf_variables,
            *[list(column) for column in per_variable],
            *shared,
        )


class OptsuiteOptimizer(SlotState, keras.optimizers.Optimizer):
    """Base class of keras-optsuite optimizers (not used directly).

    ``decays_in_update``: methods whose paper puts weight decay inside the
    update (LARS's trust ratio, NovoGrad's momentum, schedule-free's ``z``
    step, the D-Adaptation step size) set this; Keras's decoupled decay
    before the update is then switched off and the update applies
    ``self._decay_rate(variable)`` where the paper does.
    """

    decays_in_update: ClassVar[bool] = False

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

    # -- learning rate -------------------------------------------------------
    @property
    def learning_rate(self) -> Any:
        return super().learning_rate

    @learning_rate.setter
    def learning_rate(self, learning_rate: Any) -> None:
        # Keras's setter raises TypeError under a schedule (ReduceLROnPlateau
        # crashes fit); keras-optsuite schedules are rescaled instead.
        set_learning_rate(self, learning_rate)

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

    # -- weight decay --------------------------------------------------------
    def _apply_weight_decay(self, variables: list) -> None:
        if not self.decays_in_update:
            super()._apply_weight_decay(variables)

    def _decays(self, variable: Any) -> bool:
        """Whether ``weight_decay`` applies to ``variable`` (known when tracing: skip the work if not)."""
        return self.weight_decay is not None and self._use_weight_decay(variable)

    def _decay_rate(self, variable: Any, dtype: Any) -> Any:
        """``weight_decay`` for ``variable`` (0 when unset or excluded from decay)."""
        if self.weight_decay is None or not self._use_weight_decay(variable):
            return ops.zeros((), dtype=dtype)
        return ops.cast(self.weight_decay, dtype)

    # -- config ------------------------------------------------------------
    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **own_config(self, _KERAS_ARGS)}


class LearningRateFree:
    """Optimizers that estimate their own step size (mixed into optimizers).

    ``learning_rate`` multiplies the estimate (keep the default 1.0, or use a
    warmup or decay schedule on top of it); a float below
    ``SMALL_LEARNING_RATE`` gets a ``UserWarning`` naming it.
    ``estimated_step_size`` is the step size the method currently uses, for
    callbacks to log.
    """

    #: A float ``learning_rate`` below this is almost surely a step size
    #: meant for Adam (1e-3, 3e-4): here it shrinks every estimated step.
    SMALL_LEARNING_RATE: ClassVar[float] = 0.1

    def __init__(self, learning_rate: Any = 1.0, **kwargs: Any) -> None:
        if (
            isinstance(learning_rate, numbers.Real) and not isinstance(learning_rate, bool)
            and 0 <= float(learning_rate) < self.SMALL_LEARNING_RATE
        ):
            name = type(self).__name__
            warnings.warn(
                f"{name}(learning_rate={learning_rate!r}): {name} estimates its own step size "
                "and learning_rate multiplies that estimate (it is not the step size), so every "
                f"step is scaled by {learning_rate!r} and training barely moves. Keep "
                "learning_rate=1.0 (put a warmup or decay schedule on it if you want one).",
                UserWarning,
                stacklevel=3,  # the line that constructed the optimizer
            )
        # A mixin: super() is the optimizer class it is mixed into.
        super().__init__(learning_rate=learning_rate, **kwargs)  # type: ignore[call-arg]

    @property
    def estimated_step_size(self) -> float:
        """The step size in use, including the ``learning_rate`` multiplier."""
        raise NotImplementedError


class CrossVariableOptimizer(OptsuiteOptimizer):
    """Optimizers whose step couples all variables (not used directly).

    D-Adaptation and Prodigy estimate one step size from sums over every
    variable; schedule-free methods keep one averaging weight. Keras steps
    variables one at a time, so these override the step as a whole:
    ``_update_all`` computes every new value (variables, slots and scalar
    state) from the cross-replica gradient sum, in the replica context where
    every device holds the same values; the assignments then run on every
    device's copy. The result does not depend on the number of replicas.
    """

    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        # Scalar state (a step size, a weight sum) in the widest float dtype
        # of the variables, so float64 models keep float64 estimates.
        dtypes = {keras.backend.standardize_dtype(v.dtype) for v in var_list}
        self._scalar_dtype = "float64" if "float64" in dtypes else "float32"
        self._scalars = {
            name: self.add_variable(
                shape=(), dtype=self._scalar_dtype, initializer=_exactly(value, self._scalar_dtype), name=name
            )
            for name, value in self._scalar_state().items()
        }

    def _scalar_state(self) -> dict[str, float]:
        """``{name: initial value}`` of the scalar state (override)."""
        return {}

    def _backend_update_step(self, grads: list, trainable_variables: list, learning_rate: Any) -> None:
        pairs = self._all_reduce_sum_gradients(
            list(zip(grads, [_tf_variable(v) for v in trainable_variables]))
        )
        dtype = self._scalar_dtype
        grads = [
            ops.cast(dense_gradient(g), v.dtype) for (g, _), v in zip(pairs, trainable_variables)
        ]
        assignments = self._update_all(
            grads,
            list(trainable_variables),
            ops.cast(learning_rate, dtype),
            ops.cast(self.iterations + 1, dtype),
        )
        targets = [target for target, _ in assignments]
        values = [value for _, value in assignments]
        self._update_each(assign_cast, targets, per_variable=(values,))

    def _update_all(
        self, grads: list, variables: list, learning_rate: Any, t: Any
    ) -> list[tuple[Any, Any]]:
        """``[(variable or state, new value), ...]`` for one step (override).

        ``learning_rate`` and the 1-based step ``t`` are in the scalar dtype.
        """
        raise NotImplementedError

    def _update_variable(self, gradient: Any, variable: Any, learning_rate: Any, t: Any) -> None:
        raise TypeError(f"{type(self).__name__} updates all variables together (_update_all)")


class DistanceEstimate(LearningRateFree, CrossVariableOptimizer):
    """Optimizers whose step size is one estimate ``d`` from ``d0`` (not used directly).

    Subclasses keep ``d`` in the scalar state ``"d"`` and the constructor
    argument ``d0``.
    """

    d0: float

    @property
    def estimated_step_size(self) -> float:
        """``d * learning_rate``: the step size in use."""
        d = float(self._scalars["d"].numpy()) if self.built else self.d0
        return d * float(self.learning_rate)


def _exactly(value: float, dtype: str) -> Callable[..., Any]:
    # Keras's Constant initializer goes through float32 (1e-6 would change).
    return lambda shape, dtype=dtype: tf.fill(shape, tf.constant(value, dtype=dtype))


def power(base: float, t: Any) -> Any:
    """``base ** t`` for a Python float base and a tensor step ``t``."""
    # convert_to_tensor, not cast: casting a Python float goes through float32.
    return ops.power(ops.convert_to_tensor(base, dtype=t.dtype), t)


def adam_step_size(
    learning_rate: Any, beta_1: float, beta_2: float, epsilon: float, t: Any
) -> tuple[Any, Any]:
    """Adam's bias corrections folded into two scalars: ``(alpha, epsilon_hat)``.

    ``lr m_hat / (sqrt(v_hat) + epsilon) = alpha m / (sqrt(v) + epsilon_hat)``
    exactly, with ``alpha = lr sqrt(1 - beta_2^t) / (1 - beta_1^t)`` and
    ``epsilon_hat = epsilon sqrt(1 - beta_2^t)``: epsilon stays where the
    papers put it (added to ``sqrt(v_hat)``) while the tensor work is Keras's
    Adam's (no division of ``m`` or ``v`` by their corrections).
    """
    root = ops.sqrt(1.0 - power(beta_2, t))
    return learning_rate * root / (1.0 - power(beta_1, t)), epsilon * root


def adam_bias_correction(use: bool, beta_1: float, beta_2: float, t: Any) -> Any:
    """``sqrt(1 - beta_2^t) / (1 - beta_1^t)`` when ``use``, else 1."""
    if not use:
        return ops.ones_like(t)
    return ops.sqrt(1.0 - power(beta_2, t)) / (1.0 - power(beta_1, t))
