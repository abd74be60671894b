"""Limited-memory BFGS with a strong-Wolfe line search, for full-batch ``model.fit``."""

from __future__ import annotations

import math
from typing import Any, ClassVar, NamedTuple

import keras
import tensorflow as tf

from keras_optsuite._validation import check_non_negative, check_positive_int, check_range
from keras_optsuite.optimizers._base import OptsuiteOptimizer, assign_cast, snapshot
from keras_optsuite.optimizers.closure import (
    PendingClosure,
    apply_with_closure,
    pending_closure,
    replica_id,
)

LINE_SEARCHES = ("strong_wolfe", None)

# A curvature pair is stored only when y.s exceeds this (as in PyTorch's LBFGS).
_MIN_CURVATURE = 1e-10

_BRACKET, _ZOOM, _DONE = 0, 1, 2


class _Search(NamedTuple):
    """Line-search state; ``lo`` is the best point satisfying sufficient decrease so far."""

    phase: Any  # _BRACKET, _ZOOM or _DONE
    evaluations: Any
    t: Any  # the next trial step length
    t_lo: Any
    f_lo: Any
    gtd_lo: Any
    g_lo: Any
    t_hi: Any
    f_hi: Any
    gtd_hi: Any
    insufficient_progress: Any


class _History(NamedTuple):
    """Curvature pairs, oldest first; unused slots are zeros."""

    s: Any
    y: Any
    rho: Any
    count: Any


def _cubic_minimizer(x1, f1, g1, x2, f2, g2, low, high):
    """Minimizer of the cubic through two points with slopes, clipped to ``[low, high]``.

    Nocedal and Wright, eq. (3.59); the midpoint when the cubic has no
    minimizer or the arithmetic is not finite.
    """
    d1 = g1 + g2 - 3.0 * (f1 - f2) / (x1 - x2)
    d2_square = d1 * d1 - g1 * g2
    d2 = tf.sqrt(tf.maximum(d2_square, 0.0))
    from_x2 = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2.0 * d2))
    from_x1 = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2.0 * d2))
    minimizer = tf.where(x1 <= x2, from_x2, from_x1)
    usable = (d2_square >= 0.0) & tf.math.is_finite(minimizer)
    clipped = tf.minimum(tf.maximum(tf.where(usable, minimizer, low), low), high)
    return tf.where(usable, clipped, 0.5 * (low + high))


def _where(condition, a: _Search, b: _Search) -> _Search:
    return _Search(*[tf.where(condition, x, y) for x, y in zip(a, b)])


@keras.saving.register_keras_serializable(package="keras_optsuite")
class LBFGS(OptsuiteOptimizer):
    """Limited-memory BFGS with a strong-Wolfe line search (full-batch training).

    Liu and Nocedal 1989, "On the limited memory BFGS method for large scale
    optimization", https://doi.org/10.1007/BF01589116; Nocedal and Wright,
    Numerical Optimization (2nd ed.), Algorithm 7.4 (two-loop recursion) and
    Algorithms 3.5/3.6 (strong-Wolfe line search, zoom, cubic interpolation
    eq. 3.59). Argument names follow PyTorch's ``torch.optim.LBFGS``.

    **Full-batch only**: ``model.fit(x, y, batch_size=len(x), epochs=N)``.
    One optimizer step runs up to ``max_iterations`` L-BFGS iterations (default
    1: one iteration per step, so ``N`` epochs are ``N`` iterations; raise it to
    save Keras's per-epoch overhead, ~50 ms here). On mini-batches each
    iteration still pairs gradients from one batch (the curvature pairs stay
    valid) but the history mixes batches: it trains, but is not what L-BFGS is
    for. A step evaluates loss ``f`` and gradient ``g`` at the weights ``x``
    through the closure (all variables as one flat vector; under
    ``tf.distribute`` the replicas' losses and gradients are summed), takes no
    step if they are not finite, then iterates:

    1. stop if ``max|g| <= tolerance_grad``;
    2. direction ``d = -H g`` by the two-loop recursion over the last
       ``history_size`` pairs ``(s, y)`` with ``H0 = (s.y / y.y) I`` from the
       newest pair (``d = -g`` without history; if ``g.d > -tolerance_change``
       the history is cleared and ``d = -g``);
    3. search ``t`` along ``d`` from ``t0 = learning_rate`` (times
       ``min(1, 1/sum|g|)`` without history) for the strong-Wolfe conditions
       ``f(x + t d) <= f + c1 t g.d`` and ``|g(x + t d).d| <= c2 |g.d|``:
       bracketing with cubic extrapolation into ``[t + 0.01 (t - t_prev), 10 t]``,
       then zoom with cubic interpolation (PyTorch's insufficient-progress
       safeguard keeps trials 10 % away from the bracket ends; the zoom stops
       when ``|t_hi - t_lo| max|d| < tolerance_change``). After
       ``max_evaluations`` closure calls without success it takes the best
       point satisfying sufficient decrease (possibly ``t = 0``: no move);
    4. set ``x <- x + t d``, store ``s = t d``, ``y = g(x + t d) - g`` when
       ``y.s > 1e-10``; the next iteration starts from the accepted point's
       loss and gradient. Stop (PyTorch's rules) when nothing moved,
       ``max|s| <= tolerance_change`` or ``|f_new - f| < tolerance_change``.

    An iteration costs its line-search evaluations (usually 1 near the
    solution) plus ``O(history_size * n)`` arithmetic; a step starts from
    the train step's own loss and gradients (one more forward/backward pass
    only with ``weight_decay``, which moves the weights first, or when
    ``apply_with_closure`` is called without ``loss=``).
    State: ``s_history`` and ``y_history`` (``history_size x n`` each, newest
    last), ``rho_history`` and ``history_count``, so ``.keras`` files resume
    the same trajectory; memory is ``2 * history_size`` numbers per parameter
    plus a few transient flat vectors during a step. Under ``tf.distribute``
    a cross-replica sum cannot sit inside a ``tf.while_loop``, so the line
    search is unrolled there: every step runs ``max_iterations *
    max_evaluations`` closure calls (the ones after convergence without
    effect).

    Needs a closure (``needs_closure = True``): ``model.fit`` provides it
    after ``import keras_optsuite``. Sparse (``IndexedSlices``) gradients
    raise ``ValueError``; gradient clipping options are rejected (the line
    search sets the step length), as is ``gradient_accumulation_steps``.
    Line-search trials leave non-trainable state (``BatchNormalization``'s
    moving statistics) as the train step's pass left it (the closure step
    restores it). ``weight_decay`` is Keras's decoupled
    decay, applied before the step and outside the objective the line search
    sees: prefer an L2 term in the loss.

    Args:
        learning_rate: initial step length of every line search (a float or
            a schedule). Defaults to `1.0`.
        history_size: number of curvature pairs kept, >= 1. Defaults to `10`
            (SciPy's ``maxcor``).
        max_iterations: L-BFGS iterations per optimizer step, >= 1. Defaults
            to `1`.
        max_evaluations: closure calls per line search, >= 1. Defaults to `25`.
        tolerance_grad: no iteration when the largest gradient entry is at
            most this, >= 0. Defaults to `1e-7`.
        tolerance_change: smallest useful directional derivative, bracket
            width, step and loss change (see above), >= 0. Defaults to `1e-9`.
        line_search: `"strong_wolfe"`, or `None` for a fixed step of
            ``learning_rate`` (one closure call for the curvature pair).
            Defaults to `"strong_wolfe"`.
        c1: sufficient-decrease constant, in (0, 1). Defaults to `1e-4`.
        c2: curvature constant, in (c1, 1). Defaults to `0.9`.
        name: name of the optimizer.
        {{base_optimizer_keyword_args}}

    Example:

    >>> import keras_optsuite  # installs the closure train step
    >>> model.compile(optimizer=LBFGS(), loss="mse")
    >>> model.fit(x, y, batch_size=len(x), epochs=50)
    """

    needs_closure: ClassVar[bool] = True

    def __init__(
        self,
        learning_rate: Any = 1.0,
        history_size: int = 10,
        max_iterations: int = 1,
        max_evaluations: int = 25,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        line_search: str | None = "strong_wolfe",
        c1: float = 1e-4,
        c2: float = 0.9,
        name: str = "lbfgs",
        **kwargs: Any,
    ) -> None:
        for option in ("clipnorm", "clipvalue", "global_clipnorm", "gradient_accumulation_steps"):
            if kwargs.get(option) is not None:
                raise ValueError(
                    f"LBFGS does not support {option} (the line search sets the step "
                    "length on the whole batch the closure evaluates), got "
                    f"{option}={kwargs[option]!r}"
                )
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.history_size = check_positive_int("history_size", history_size)
        self.max_iterations = check_positive_int("max_iterations", max_iterations)
        self.max_evaluations = check_positive_int("max_evaluations", max_evaluations)
        self.tolerance_grad = check_non_negative("tolerance_grad", tolerance_grad)
        self.tolerance_change = check_non_negative("tolerance_change", tolerance_change)
        if line_search not in LINE_SEARCHES:
            raise ValueError(
                f"line_search must be one of {LINE_SEARCHES}, got line_search={line_search!r}"
            )
        self.line_search = line_search
        self.c1 = check_range("c1", c1, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        self.c2 = check_range("c2", c2, self.c1, 1.0, low_inclusive=False, high_inclusive=False)
        self._closures: dict[int, PendingClosure] = {}  # by replica, set during apply
        # The variables of the step in progress, by replica. A plain dict:
        # Keras would track model variables stored in an attribute it wraps
        # as optimizer variables (and save them with the optimizer).
        object.__setattr__(self, "_apply_variables", {})

    # -- state -------------------------------------------------------------
    def build(self, var_list: list) -> None:
        if self.built:
            return
        super().build(var_list)
        dtypes = {keras.backend.standardize_dtype(v.dtype) for v in var_list}
        self._flat_dtype = "float64" if "float64" in dtypes else "float32"
        size = sum(math.prod(v.shape) for v in var_list)
        memory = self.history_size
        self._s_history = self.add_variable((memory, size), dtype=self._flat_dtype, name="s_history")
        self._y_history = self.add_variable((memory, size), dtype=self._flat_dtype, name="y_history")
        self._rho_history = self.add_variable((memory,), dtype=self._flat_dtype, name="rho_history")
        self._history_count = self.add_variable((), dtype=self._flat_dtype, name="history_count")

    # -- entry points ------------------------------------------------------
    def apply_with_closure(self, grads: list, trainable_variables: list, closure: Any) -> None:
        """One step; ``closure() -> (gradients, loss)`` at the current weights.

        Example:

        >>> def closure():
        ...     with tf.GradientTape() as tape:
        ...         loss = keras.ops.mean((model(x) - y) ** 2)
        ...     return tape.gradient(loss, model.trainable_variables), loss
        >>> LBFGS().apply_with_closure(closure()[0], model.trainable_variables, closure)
        """
        apply_with_closure(self, grads, trainable_variables, closure)

    def apply(self, grads: list, trainable_variables: list | None = None) -> None:
        variables = list(self._trainable_variables if trainable_variables is None else trainable_variables)
        for gradient, variable in zip(grads, variables):
            if isinstance(gradient, tf.IndexedSlices):
                raise ValueError(
                    f"LBFGS needs dense gradients, but variable {_name(variable)!r} received "
                    "tf.IndexedSlices (sparse, e.g. from an Embedding layer): L-BFGS keeps "
                    "dense curvature pairs over all parameters. Train that model with "
                    "another optimizer."
                )
        replica = replica_id()
        pending_closure(self)
        self._apply_variables[replica] = variables
        try:
            super().apply(grads, trainable_variables)
        finally:
            self._apply_variables.pop(replica, None)

    # -- the step ------------------------------------------------------------
    def _backend_update_step(self, grads: list, trainable_variables: list, learning_rate: Any) -> None:
        replica = replica_id()
        variables = self._apply_variables[replica]
        pending = self._closures[replica]
        dtype = self._flat_dtype
        replicas = self._distribution_strategy.num_replicas_in_sync

        def flatten(tensors: list) -> Any:
            return tf.concat(
                [
                    tf.reshape(tf.zeros(v.shape, dtype) if t is None else tf.cast(t, dtype), [-1])
                    for t, v in zip(tensors, variables)
                ],
                axis=0,
            )

        def write(flat: Any) -> None:
            pieces = tf.split(flat, [math.prod(v.shape) for v in variables])
            values = [tf.reshape(p, v.shape) for p, v in zip(pieces, variables)]
            self._update_each(assign_cast, variables, per_variable=(values,))

        def evaluate(given: tuple[list, Any] | None = None) -> tuple[Any, Any, Any]:
            gradients, loss = pending.closure() if given is None else given
            for gradient, variable in zip(gradients, variables):
                if isinstance(gradient, tf.IndexedSlices):
                    raise ValueError(
                        f"LBFGS needs dense gradients, but the closure returned "
                        f"tf.IndexedSlices for variable {_name(variable)!r}"
                    )
            flat = flatten(list(gradients))
            loss = tf.cast(loss, dtype)
            if replicas > 1:
                flat, loss = tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, [flat, loss]
                )
            finite = tf.math.is_finite(loss) & tf.reduce_all(tf.math.is_finite(flat))
            # A non-finite trial point fails sufficient decrease (f = inf).
            loss = tf.where(finite, loss, tf.constant(math.inf, dtype))
            flat = tf.where(finite, flat, tf.zeros_like(flat))
            return loss, flat, finite

        x = flatten([snapshot(v) for v in variables])
        # The train step's own pass gave the gradients at these weights and
        # its loss: reuse them, unless weight decay moved the weights since.
        reusable = pending.loss is not None and not self.weight_decay
        given = None
        if reusable:
            # Keras drops variables without gradients from apply's lists.
            by_variable = {id(v): gradient for gradient, v in zip(grads, trainable_variables)}
            given = ([by_variable.get(id(v)) for v in variables], pending.loss)
        f, g, finite = evaluate(given)
        history = _History(
            snapshot(self._s_history),
            snapshot(self._y_history),
            snapshot(self._rho_history),
            snapshot(self._history_count),
        )
        lr = tf.cast(learning_rate, dtype)

        def iterate(iteration, x, f, g, active, history):
            """One L-BFGS iteration from ``x`` (loss ``f``, gradient ``g``); no-op if not ``active``."""
            active = active & (tf.reduce_max(tf.abs(g)) > self.tolerance_grad)
            direction = self._two_loop(g, history)
            gtd = tf.reduce_sum(g * direction)
            # Not a descent direction (rounding, or a history from other
            # batches): clear the history and restart from steepest descent.
            restart = active & (gtd > -self.tolerance_change)
            direction = tf.where(restart, -g, direction)
            gtd = tf.where(restart, -tf.reduce_sum(g * g), gtd)
            history = _History(*[tf.where(restart, tf.zeros_like(h), h) for h in history])
            t0 = tf.where(
                history.count > 0,
                lr,
                lr * tf.minimum(tf.ones((), dtype), 1.0 / tf.reduce_sum(tf.abs(g))),
            )
            zero = tf.zeros((), dtype)
            search = _Search(
                phase=tf.where(active, _BRACKET, _DONE),
                evaluations=tf.zeros((), tf.int32),
                t=t0,
                t_lo=zero, f_lo=f, gtd_lo=gtd, g_lo=g,
                t_hi=zero, f_hi=f, gtd_hi=gtd,
                insufficient_progress=tf.constant(False),
            )
            direction_max = tf.reduce_max(tf.abs(direction))

            def trial(state: _Search) -> _Search:
                write(x + state.t * direction)
                f_new, g_new, _ = evaluate()
                if self.line_search is None:
                    return state._replace(
                        phase=tf.constant(_DONE), evaluations=state.evaluations + 1,
                        t_lo=state.t, f_lo=f_new, gtd_lo=tf.reduce_sum(g_new * direction), g_lo=g_new,
                    )
                return self._advance(state, f_new, g_new, f, gtd, direction, direction_max)

            budget = 1 if self.line_search is None else self.max_evaluations
            if replicas > 1:
                for _ in range(budget):
                    search = _where(search.phase == _DONE, search, trial(search))
            else:
                search = tf.while_loop(
                    lambda state: (state.phase != _DONE) & (state.evaluations < budget),
                    lambda state: (trial(state),),
                    (search,),
                )[0]

            step = search.t_lo * direction
            x_new = x + step
            write(x_new)
            y = search.g_lo - g
            ys = tf.reduce_sum(y * step)
            keep = ys > _MIN_CURVATURE
            rho = 1.0 / tf.where(keep, ys, tf.ones_like(ys))

            def shift(stored, new):
                return tf.where(keep, tf.concat([stored[1:], new[None]], axis=0), stored)

            history = _History(
                shift(history.s, step),
                shift(history.y, y),
                shift(history.rho, rho),
                tf.where(keep, tf.minimum(history.count + 1.0, float(self.history_size)), history.count),
            )
            # PyTorch's stopping rules for the next iteration of this step.
            active = (
                active
                & (search.t_lo > 0.0)
                & (tf.reduce_max(tf.abs(step)) > self.tolerance_change)
                & (tf.abs(search.f_lo - f) >= self.tolerance_change)
            )
            return iteration + 1, x_new, search.f_lo, search.g_lo, active, history

        carry = (tf.zeros((), tf.int32), x, f, g, finite, history)
        if replicas > 1 or self.max_iterations == 1:
            for _ in range(self.max_iterations):
                carry = iterate(*carry)
        else:
            carry = tf.while_loop(
                lambda iteration, x, f, g, active, history: active
                & (iteration < self.max_iterations),
                iterate,
                carry,
            )
        history = carry[-1]
        state_variables = [self._s_history, self._y_history, self._rho_history, self._history_count]
        self._update_each(assign_cast, state_variables, per_variable=(list(history),))

    def _two_loop(self, g, history: _History) -> Any:
        """``-H g`` by Nocedal and Wright's Algorithm 7.4 (empty slots are zeros)."""
        s_history, y_history, rho_history, count = history
        memory = self.history_size
        newest_ys = tf.reduce_sum(s_history[-1] * y_history[-1])
        newest_yy = tf.reduce_sum(y_history[-1] * y_history[-1])
        gamma = tf.where(count > 0, newest_ys / tf.where(count > 0, newest_yy, 1.0), 1.0)

        def backward(i, q, alphas):
            index = memory - 1 - i
            alpha = rho_history[index] * tf.reduce_sum(s_history[index] * q)
            return i + 1, q - alpha * y_history[index], tf.tensor_scatter_nd_update(
                alphas, [[index]], [alpha]
            )

        _, q, alphas = tf.while_loop(
            lambda i, q, a: i < memory, backward, (0, g, tf.zeros_like(rho_history))
        )

        def forward(index, r):
            beta = rho_history[index] * tf.reduce_sum(y_history[index] * r)
            return index + 1, r + (alphas[index] - beta) * s_history[index]

        _, r = tf.while_loop(lambda i, r: i < memory, forward, (0, gamma * q))
        return -r

    def _advance(self, state: _Search, f_new, g_new, f0, gtd0, direction, direction_max) -> _Search:
        """The line search after evaluating ``f_new, g_new`` at ``state.t``."""
        t = state.t
        gtd_new = tf.reduce_sum(g_new * direction)
        step = state.evaluations + 1
        fails_decrease = (f_new > f0 + self.c1 * t * gtd0) | (f_new >= state.f_lo)
        curvature_holds = tf.abs(gtd_new) <= -self.c2 * gtd0
        new_is_lo = state._replace(t_lo=t, f_lo=f_new, gtd_lo=gtd_new, g_lo=g_new)
        new_is_hi = state._replace(t_hi=t, f_hi=f_new, gtd_hi=gtd_new)
        old_lo_is_hi = new_is_lo._replace(t_hi=state.t_lo, f_hi=state.f_lo, gtd_hi=state.gtd_lo)
        zoom = tf.constant(_ZOOM)
        done = tf.constant(_DONE)

        # Algorithm 3.5 (bracketing): lo holds the previous trial.
        extrapolated = _cubic_minimizer(
            state.t_lo, state.f_lo, state.gtd_lo, t, f_new, gtd_new,
            t + 0.01 * (t - state.t_lo), 10.0 * t,
        )
        bracketing = _where(
            fails_decrease,
            new_is_hi._replace(phase=zoom),
            _where(
                curvature_holds,
                new_is_lo._replace(phase=done),
                _where(
                    gtd_new >= 0.0,
                    old_lo_is_hi._replace(phase=zoom),
                    new_is_lo._replace(t=extrapolated),
                ),
            ),
        )
        # Algorithm 3.6 (zoom).
        zooming = _where(
            fails_decrease,
            new_is_hi,
            _where(
                curvature_holds,
                new_is_lo._replace(phase=done),
                _where(gtd_new * (state.t_hi - state.t_lo) >= 0.0, old_lo_is_hi, new_is_lo),
            ),
        )
        following = _where(state.phase == _BRACKET, bracketing, zooming)
        following = following._replace(evaluations=step)
        entering_zoom = (following.phase == _ZOOM) & (state.phase == _BRACKET)
        following = following._replace(
            insufficient_progress=tf.where(entering_zoom, False, following.insufficient_progress)
        )
        return self._next_zoom_trial(following, direction_max)

    def _next_zoom_trial(self, state: _Search, direction_max) -> _Search:
        """Next zoom trial by cubic interpolation, with the progress safeguard."""
        low = tf.minimum(state.t_lo, state.t_hi)
        high = tf.maximum(state.t_lo, state.t_hi)
        t = _cubic_minimizer(
            state.t_lo, state.f_lo, state.gtd_lo, state.t_hi, state.f_hi, state.gtd_hi, low, high
        )
        margin = 0.1 * (high - low)
        near_end = tf.minimum(high - t, t - low) < margin
        at_end = (t >= high) | (t <= low)
        move = near_end & (state.insufficient_progress | at_end)
        moved = tf.where(tf.abs(t - high) < tf.abs(t - low), high - margin, low + margin)
        zoom_trial = state._replace(
            t=tf.where(move, moved, t),
            insufficient_progress=near_end & ~move,
        )
        narrow = (high - low) * direction_max < self.tolerance_change
        zoom_trial = zoom_trial._replace(phase=tf.where(narrow, _DONE, _ZOOM))
        return _where(state.phase == _ZOOM, zoom_trial, state)


def _name(variable: Any) -> str:
    return str(getattr(variable, "path", None) or getattr(variable, "name", repr(variable)))
