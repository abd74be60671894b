"""Train optimizers that need the loss again (SAM and kin) with plain ``model.fit``.

Keras's ``train_step`` hands the optimizer gradients only. An optimizer that
must re-evaluate the loss on the same batch (SAM's gradient at perturbed
weights, Hessian-vector products, line searches) sets the class attribute
``needs_closure = True`` and receives a *closure*: a function that returns
``(gradients, loss)`` at the model's CURRENT weights on the current batch.
While ``apply`` runs, the closure is in ``optimizer._closures[replica_id()]``
(:class:`PendingClosure`; one per replica, because MirroredStrategy traces
replicas concurrently); ``apply`` without one must raise
:class:`ClosureRequiredError` with :func:`missing_closure_message`.

Importing ``keras_optsuite`` installs :func:`closure_train_step` in front of
the TensorFlow trainer's ``train_step``: when the compiled optimizer (seen
through ``LossScaleOptimizer`` and keras-optsuite wrappers) needs a closure,
the step runs here; every other optimizer runs Keras's own ``train_step``
untouched. The closure step:

* runs the forward pass and ``model._compute_loss`` (sample weights,
  regularization losses) once, updates the loss tracker and the compiled
  metrics from that first pass only;
* scales the loss with ``optimizer.scale_loss`` (``mixed_float16``: the
  ``LossScaleOptimizer`` unscales and skips non-finite steps as usual) and
  scales/unscales the closure's loss with the same dynamic scale;
* under ``tf.distribute`` each replica's closure returns its own gradients;
  the optimizer sums them across replicas before any cross-variable math.

A model that overrides ``train_step`` does not get this step: call
:func:`closure_train_step` from it (``return closure_train_step(self, data)``)
or :func:`apply_with_closure` with your own closure. The integration is
applied only when Keras is in :data:`KNOWN_KERAS` and a probe still finds the
upstream ``train_step`` it was written against (see
:func:`enable_closure_train_step`).

Curvature: an optimizer that sets ``needs_hessian_vector_product = True``
also gets ``pending.hessian_vector_product(vectors)``, returning
``(gradients, H @ vectors, loss)`` on the same batch at the current weights
(nested ``GradientTape``; :func:`hessian_vector_product`), and every closure
optimizer gets ``pending.output_loss_gradients(loss_fn)``: the gradients of
``loss_fn(y_pred, y, sample_weight)`` on a fresh forward pass (Sophia's
Gauss-Newton-Bartlett estimator samples labels from ``y_pred``), with
``pending.model_loss`` the model's compiled loss. Both are unscaled under
``mixed_float16``; under ``tf.distribute`` each replica returns its own.

The extra passes run in training mode (dropout draws new masks, batch
statistics normalize), but leave the model's state as the first pass left
it: non-trainable variables (``BatchNormalization``'s moving statistics,
seed states) and the compiled loss's trackers are restored after each, so
a line search's trials or SAM's second pass do not move the moving
averages. Known limit: a user ``compute_loss`` that updates trackers
stored outside the model's variables counts the extra passes too.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple, Sequence

import keras
import tensorflow as tf

from keras_optsuite import _upstream
from keras_optsuite._upstream import APPLIED, UpstreamPatch
from keras_optsuite.optimizers._base import snapshot
from keras_optsuite.optimizers._wrapper import iter_optimizers

#: ``[first, last)`` Keras versions whose TensorFlow ``train_step`` this
#: integration was checked against (3.15.1 here). Past it the integration
#: stays off until someone checks the new release and moves the bound.
KNOWN_KERAS = ((3, 3, 0), (3, 16, 0))

#: Fragments of the upstream ``TensorFlowTrainer.train_step`` the closure
#: step reproduces (whitespace ignored): if one disappears, Keras changed
#: the step and the integration turns itself off.
_EXPECTED_UPSTREAM = (
    "data_adapter_utils.unpack_x_y_sample_weight(data)",
    "self._compute_loss(",
    "loss_module.unscale_loss_for_distribution(loss)",
    "loss=self.optimizer.scale_loss(loss)",
    "self.optimizer.apply_gradients(zip(gradients,trainable_weights))",
    "returnself.compute_metrics(x,y,y_pred,sample_weight=sample_weight)",
)

Closure = Callable[[], tuple[list, Any]]
#: ``hessian_vector_product(vectors) -> (gradients, hvps, loss)``.
HessianVectorProduct = Callable[[Sequence[Any]], tuple[list, list, Any]]
#: ``output_loss_gradients(loss_fn) -> gradients`` of ``loss_fn(y_pred, y, sample_weight)``.
OutputLossGradients = Callable[[Callable[[Any, Any, Any], Any]], list]

#: How :func:`hessian_vector_product` differentiates twice: reverse mode over
#: reverse mode (``"back_over_back"``) or forward mode over reverse mode
#: (``"forward_over_back"``). ``benchmarks/hvp_modes.py`` measures both.
HVP_MODES = ("back_over_back", "forward_over_back")


class ClosureRequiredError(RuntimeError):
    """An optimizer that needs a closure was stepped with gradients only."""


def needs_closure(optimizer: Any) -> bool:
    """Whether ``optimizer`` or one nested in it needs a closure.

    Looks through ``LossScaleOptimizer``, ``MultiOptimizer`` and
    keras-optsuite wrappers.

    Example:

    >>> needs_closure(keras.optimizers.Adam())
    False
    """
    return optimizer is not None and any(
        getattr(o, "needs_closure", False) for o in iter_optimizers(optimizer)
    )


def pending_closure(optimizer: Any) -> PendingClosure:
    """This replica's closure for ``optimizer``'s current ``apply``.

    Raises:
        ClosureRequiredError: ``apply`` was called with gradients only, or
            the optimizer needs Hessian-vector products
            (``needs_hessian_vector_product``) and the caller gave none.
    """
    pending = optimizer._closures.get(replica_id())
    if pending is None:
        raise ClosureRequiredError(missing_closure_message(optimizer))
    if getattr(optimizer, "needs_hessian_vector_product", False) and pending.hessian_vector_product is None:
        raise ClosureRequiredError(
            f"{type(optimizer).__name__} needs Hessian-vector products: pass "
            "hessian_vector_product= to apply_with_closure (see "
            "keras_optsuite.optimizers.closure.hessian_vector_product), or train with "
            "model.fit / closure_train_step, which provide it."
        )
    return pending


def missing_closure_message(optimizer: Any) -> str:
    """The error text for ``optimizer.apply`` called without a closure."""
    name = type(optimizer).__name__
    status = _upstream.patch_status(TRAIN_STEP_PATCH.name)
    if status == APPLIED:
        how = (
            "model.fit, train_on_batch and Keras's default train_step provide it "
            "(installed by `import keras_optsuite`). If your model overrides "
            "train_step, end it with "
            "`return keras_optsuite.optimizers.closure.closure_train_step(self, data)`"
        )
    else:
        reason = status or "keras_optsuite.optimizers.closure was not imported"
        how = (
            f"the model.fit integration is off ({reason}); override train_step with "
            "`return keras_optsuite.optimizers.closure.closure_train_step(self, data)`"
        )
    return (
        f"{name} needs the loss re-evaluated on the same batch (a closure), but apply() "
        f"received gradients only. {how}; in a custom training loop call "
        f"`keras_optsuite.optimizers.closure.apply_with_closure(optimizer, grads, "
        f"variables, closure)` with closure() returning (gradients, loss) at the "
        f"current weights."
    )


def apply_with_closure(
    optimizer: keras.optimizers.Optimizer,
    grads: Sequence[Any],
    variables: Sequence[Any],
    closure: Closure,
    hessian_vector_product: HessianVectorProduct | None = None,
    output_loss_gradients: OutputLossGradients | None = None,
    model_loss: Any = None,
    loss: Any = None,
) -> None:
    """Step ``optimizer`` (possibly a ``LossScaleOptimizer`` or nested wrappers).

    Args:
        optimizer: the compiled optimizer; each closure-needing optimizer inside
            it receives ``closure``.
        grads: gradients of the (scaled, if ``optimizer`` scales the loss) loss
            at the current weights.
        variables: the trainable variables, in the order of ``grads``.
        closure: ``closure() -> (gradients, loss)`` evaluated at the current
            weights on the same batch, unscaled. Under ``tf.distribute`` it runs
            on each replica and returns that replica's gradients (the
            optimizer sums them).
        hessian_vector_product: ``hvp(vectors) -> (gradients, H @ vectors,
            loss)`` at the current weights on the same batch, unscaled; needed
            by optimizers with ``needs_hessian_vector_product``.
        output_loss_gradients: ``f(loss_fn) -> gradients`` of
            ``loss_fn(y_pred, y, sample_weight)`` on a fresh forward pass.
        model_loss: the loss the model was compiled with (``model.loss``).
        loss: the unscaled loss whose gradients ``grads`` are (this replica's
            share), so an optimizer that needs the loss at the current
            weights (LBFGS) need not evaluate it again.

    Example:

    >>> def closure():
    ...     with tf.GradientTape() as tape:
    ...         loss = loss_fn(y, model(x, training=True))
    ...     return tape.gradient(loss, model.trainable_variables), loss
    >>> grads, _ = closure()
    >>> apply_with_closure(optimizer, grads, model.trainable_variables, closure)
    """
    scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    nested = list(iter_optimizers(optimizer))
    targets = [o for o in nested if getattr(o, "needs_closure", False)]
    _reject_accumulation_around(nested)
    # MirroredStrategy traces each replica in its own thread, concurrently:
    # each replica's closure (its own slice of the batch) is kept apart.
    replica = replica_id()
    for target in targets:
        # The loss scale only checks the first gradient: a closure gradient
        # that overflows skips the step instead of writing inf into weights.
        target._closures[replica] = PendingClosure(
            closure,
            skips_non_finite=scaling,
            hessian_vector_product=hessian_vector_product,
            output_loss_gradients=output_loss_gradients,
            model_loss=model_loss,
            loss=loss,
        )
    try:
        optimizer.apply(list(grads), list(variables))
    finally:
        for target in targets:
            target._closures.pop(replica, None)


def _reject_accumulation_around(nested: list) -> None:
    from keras_optsuite.optimizers.gradient_accumulation import GradientAccumulation

    for position, outer in enumerate(nested):
        if isinstance(outer, GradientAccumulation) and any(
            getattr(o, "needs_closure", False) for o in nested[position + 1 :]
        ):
            raise ValueError(
                f"optimizer={type(nested[0]).__name__} puts GradientAccumulation around an "
                "optimizer that needs a closure: the closure would see only the last "
                "micro-batch. Wrap the other way round (e.g. SAM(GradientAccumulation(Adam())))."
            )


class PendingClosure(NamedTuple):
    """The closure an optimizer uses during one ``apply`` on one replica."""

    closure: Closure
    skips_non_finite: bool
    hessian_vector_product: HessianVectorProduct | None = None
    output_loss_gradients: OutputLossGradients | None = None
    model_loss: Any = None
    loss: Any = None  # the first pass's loss (unscaled), whose gradients apply() received


def hessian_vector_product(
    loss_fn: Callable[[], Any],
    variables: Sequence[Any],
    vectors: Sequence[Any],
    mode: str = "back_over_back",
) -> tuple[list, list, Any]:
    """Gradients, Hessian-vector products and the loss of ``loss_fn()``.

    Args:
        loss_fn: ``() -> scalar loss``, evaluated once (one forward pass).
        variables: the variables to differentiate with respect to.
        vectors: one tensor per variable, same shapes (``None`` for a
            variable whose product is not wanted counts as zeros).
        mode: ``"back_over_back"`` (the gradient of ``g . v``) or
            ``"forward_over_back"`` (a ``ForwardAccumulator`` around the
            gradient tape: the directional derivative of ``g`` along ``v``).

    Returns:
        ``(gradients, hvps, loss)``; a variable the loss does not depend on
        gets ``None`` gradients and zero products.

    Example:

    >>> w = keras.Variable([1.0, 2.0])
    >>> _, hv, _ = hessian_vector_product(lambda: keras.ops.sum(w**3), [w], [tf.ones(2)])
    >>> hv[0].numpy()  # 6 w
    array([ 6., 12.], dtype=float32)
    """
    if mode not in HVP_MODES:
        raise ValueError(f"mode must be one of {HVP_MODES}, got mode={mode!r}")
    variables = list(variables)
    raw = [v.value if isinstance(v, keras.Variable) else v for v in variables]
    tangents = [
        tf.zeros_like(r) if t is None else tf.cast(t, r.dtype) for r, t in zip(raw, vectors)
    ]
    if mode == "forward_over_back":
        with tf.autodiff.ForwardAccumulator(primals=raw, tangents=tangents) as accumulator:
            with tf.GradientTape() as tape:
                loss = loss_fn()
            grads = tape.gradient(loss, raw)
            # ForwardAccumulator cannot track IndexedSlices (Embedding
            # gradients): densify inside its context so the product is traced.
            grads = [
                tf.convert_to_tensor(g) if isinstance(g, tf.IndexedSlices) else g for g in grads
            ]
        hvps = accumulator.jvp(grads, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        hvps = [tf.zeros_like(r) if h is None else h for r, h in zip(raw, hvps)]
        return list(grads), list(hvps), loss
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = loss_fn()
        grads = inner.gradient(loss, raw)
        dot = tf.add_n(
            [tf.reduce_sum(tf.cast(g, t.dtype) * t) for g, t in zip(grads, tangents) if g is not None]
            or [tf.zeros((), loss.dtype)]
        )
    hvps = outer.gradient(dot, raw, unconnected_gradients=tf.UnconnectedGradients.ZERO)
    return list(grads), list(hvps), loss


def replica_id() -> int:
    """This replica's index in its sync group (0 outside ``tf.distribute``)."""
    context = tf.distribute.get_replica_context()
    if context is None:  # cross-replica context
        return 0
    value = tf.get_static_value(context.replica_id_in_sync_group)
    return 0 if value is None else int(value)


def _forward(model: keras.Model, x: Any, y: Any, sample_weight: Any) -> tuple[Any, Any]:
    if model._call_has_training_arg:
        y_pred = model(x, training=True)
    else:
        y_pred = model(x)
    loss = model._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    return y_pred, loss


def _compile_loss_variables(model: keras.Model) -> list:
    compile_loss = getattr(model, "_compile_loss", None)
    metrics = getattr(compile_loss, "metrics", None) or []
    return [v for metric in metrics for v in metric.variables]


def closure_train_step(model: keras.Model, data: Any) -> dict[str, Any]:
    """One training step that gives the optimizer a closure; returns the logs.

    Same contract as ``keras.Model.train_step`` (TensorFlow backend). Call it
    from a model that overrides ``train_step``::

        class MyModel(keras.Model):
            def train_step(self, data):
                # ... your preprocessing ...
                return closure_train_step(self, data)
    """
    tree, loss_module = _upstream.tree, _upstream.loss_module
    x, y, sample_weight = _upstream.data_adapter_utils.unpack_x_y_sample_weight(data)
    optimizer = model.optimizer
    with tf.GradientTape() as tape:
        y_pred, loss = _forward(model, x, y, sample_weight)
        model._loss_tracker.update_state(
            loss_module.unscale_loss_for_distribution(loss),
            sample_weight=tf.shape(next(i for i in tree.flatten(x) if i is not None))[0],
        )
        scaled_loss = optimizer.scale_loss(loss)
    variables = model.trainable_weights
    if not variables:
        warnings.warn("The model does not have any trainable weights.", stacklevel=2)
        return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)
    grads = tape.gradient(scaled_loss, variables)
    loss_scaler = optimizer if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None

    def scale_of(loss: Any) -> Any:
        if loss_scaler is None:
            return None
        return tf.cast(snapshot(loss_scaler.dynamic_scale), loss.dtype)

    def unscale(tensors: list, scale: Any) -> list:
        if scale is None:
            return list(tensors)
        return [t if t is None else t / tf.cast(scale, t.dtype) for t in tensors]

    def keeping_state(evaluate: Callable) -> Callable:
        """``evaluate`` leaving the model's state as the first pass left it.

        Only the first pass counts, as in Keras's own step: the compiled
        loss's per-output trackers and every non-trainable variable
        (BatchNormalization's moving statistics, random layers' seed states)
        are put back after each extra pass (SAM's, a Hessian-vector product,
        every line-search trial).
        """

        def run(*args: Any) -> Any:
            state = _compile_loss_variables(model) + list(model.non_trainable_variables)
            saved = [snapshot(v) for v in state]
            result = evaluate(*args)
            for variable, value in zip(state, saved):
                variable.assign(value)
            return result

        return run

    @keeping_state
    def closure() -> tuple[list, Any]:
        with tf.GradientTape() as inner_tape:
            _, closure_loss = _forward(model, x, y, sample_weight)
            scale = scale_of(closure_loss)
            scaled = closure_loss if scale is None else closure_loss * scale
        return unscale(inner_tape.gradient(scaled, variables), scale), closure_loss

    @keeping_state
    def curvature(vectors: Sequence[Any]) -> tuple[list, list, Any]:
        holder: dict[str, Any] = {}

        def scaled_loss_fn() -> Any:
            _, holder["loss"] = _forward(model, x, y, sample_weight)
            holder["scale"] = scale_of(holder["loss"])
            if holder["scale"] is None:
                return holder["loss"]
            return holder["loss"] * holder["scale"]

        mode = next(
            (o.hvp_mode for o in iter_optimizers(optimizer) if hasattr(o, "hvp_mode")),
            "back_over_back",
        )
        g, hv, _ = hessian_vector_product(scaled_loss_fn, variables, vectors, mode=mode)
        return unscale(g, holder["scale"]), unscale(hv, holder["scale"]), holder["loss"]

    @keeping_state
    def output_loss_gradients(loss_fn: Callable[[Any, Any, Any], Any]) -> list:
        with tf.GradientTape() as output_tape:
            if model._call_has_training_arg:
                predicted = model(x, training=True)
            else:
                predicted = model(x)
            output_loss = loss_fn(predicted, y, sample_weight)
            scale = scale_of(output_loss)
            scaled = output_loss if scale is None else output_loss * scale
        return unscale(output_tape.gradient(scaled, variables), scale)

    apply_with_closure(
        optimizer,
        grads,
        variables,
        closure,
        hessian_vector_product=curvature,
        output_loss_gradients=output_loss_gradients,
        model_loss=getattr(model, "loss", None),
        loss=loss,
    )
    return model.compute_metrics(x, y, y_pred, sample_weight=sample_weight)


# --- installation ---------------------------------------------------------------
def _make_train_step(original: Callable) -> Callable:
    def train_step(self: Any, data: Any) -> Any:
        if needs_closure(getattr(self, "optimizer", None)):
            return closure_train_step(self, data)
        return original(self, data)

    train_step.__doc__ = (
        "Keras's train_step, or keras_optsuite's closure_train_step when the "
        "optimizer needs a closure (keras_optsuite.optimizers.closure)."
    )
    return train_step


#: The closure step in front of the TensorFlow trainer's ``train_step``.
TRAIN_STEP_PATCH = UpstreamPatch(
    name="train_step",
    owner=lambda: _upstream.tensorflow_trainer.TensorFlowTrainer,
    attribute="train_step",
    expected_source=_EXPECTED_UPSTREAM,
    make=_make_train_step,
    purpose="model.fit hands closure optimizers (SAM family, AdaHessian, Sophia, L-BFGS) "
    "their closure, see keras_optsuite.optimizers.closure",
)


def enable_closure_train_step() -> dict[str, str]:
    """Install the closure train step in front of Keras's; idempotent.

    Importing ``keras_optsuite`` calls it. Models whose optimizer does not
    need a closure run Keras's ``train_step`` unchanged. It is applied only
    when Keras is in :data:`KNOWN_KERAS` and the upstream ``train_step``
    still has the code the closure step reproduces (``keras_optsuite._upstream``
    checks both); otherwise closure optimizers explain in their error how
    to train them.

    Returns:
        ``{"train_step": "applied" or the reason it was not}``.

    Example:

    >>> enable_closure_train_step()["train_step"]
    'applied'
    """
    return {TRAIN_STEP_PATCH.name: _upstream.apply_patch(TRAIN_STEP_PATCH, KNOWN_KERAS)}


def disable_closure_train_step() -> None:
    """Put Keras's ``train_step`` back (closure optimizers then raise in ``fit``).

    Example:

    >>> disable_closure_train_step()
    """
    _upstream.restore_patch(TRAIN_STEP_PATCH, "disabled by disable_closure_train_step()")
