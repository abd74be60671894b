"""Release what TensorFlow keeps of a finished trial: the gradient functions it registered.

Every ``tf.custom_gradient`` traced in graph mode (inside a ``tf.function``)
registers its gradient under a fresh name (``CustomGradient-<uid>``) in
TensorFlow's process-wide gradient registry and never removes it. The
registered function closes over the traced graph's tensors, so the whole
graph (its Python operations and tensors and the C graph behind them) stays
alive for the life of the process. Every Keras ``fit`` traces one: the
optimizer's cross-replica gradient sum (``ReplicaContext.all_reduce``, also
under the default strategy) is a ``custom_gradient``, so each trained model
leaves its traced ``one_step_on_data`` behind (about 1.2 MiB for a small
MLP; keras-tuner#873's "RAM grows trial after trial"). Upstream:
tensorflow/tensorflow#97697 (the closure keeps the forward ``result``; TF
2.19 on, still in 2.21), tensorflow/tensorflow#27492 (the registry keeps
the graph), keras-team/tf-keras#898 (a proposed purge in ``clear_session``).

A tuner owns its trials' models: once a trial has been trained, the
gradients of its graphs have been taken (at trace time), and nothing
differentiates those graphs again, so the entries the trial registered can
go. Entries registered before the trial (the user's own graphs) stay.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

from keras_optsuite._upstream import gradient_registry

#: The prefix of the names ``tf.custom_gradient`` registers (``custom_gradient.generate_name``).
CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


def custom_gradient_names() -> set[str]:
    """The names of the ``tf.custom_gradient`` functions registered now."""
    registry = gradient_registry()
    return {name for name in registry if name.startswith(CUSTOM_GRADIENT_PREFIX)} if registry else set()


@contextlib.contextmanager
def releasing_custom_gradients() -> Iterator[None]:
    """Unregister, when the block ends, the ``tf.custom_gradient`` functions registered inside it.

    Wrap one trial's build and fit: the trial's traced graphs become
    collectable as soon as its model is. Do not wrap code whose graphs are
    differentiated again after the block (nothing in a tuner's trial is),
    and trace nothing you keep in other threads meanwhile: what any thread
    registered while the block ran goes. The tuners of :mod:`keras_optsuite.tuning` wrap every trial; wrap your
    own training loops the same way.

    Example:
    >>> for learning_rate in (1e-3, 3e-3):
    ...     keras.backend.clear_session()
    ...     with releasing_custom_gradients():
    ...         model = build_model()
    ...         model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="mse")
    ...         model.fit(x, y, epochs=2, verbose=0)
    """
    before = custom_gradient_names()
    try:
        yield
    finally:
        registry = gradient_registry()
        if registry is not None:
            for name in custom_gradient_names() - before:
                registry.pop(name, None)
