"""Make Keras 3's ``model.fit`` work under ``tf.distribute.MultiWorkerMirroredStrategy``.

Keras 3.15.1 on TensorFlow cannot run TensorFlow's own multi-worker Keras
tutorial (keras-team/keras#20585). With two or more workers, three pieces of
upstream code go wrong; this module replaces exactly those three, and only
their multi-worker branch (every other strategy still runs the upstream code):

1. ``TensorFlowTrainer._maybe_symbolic_build`` (``fit`` and ``evaluate``)
   takes the first distributed batch, a tuple ``(x, y)`` of ``PerReplica``
   values, and calls ``strategy.reduce("MEAN", batch, axis=None)`` on the
   whole tuple just to learn shapes and dtypes for building the model.
   ``Strategy.reduce`` does not accept nests. Single-worker strategies pass a
   non-distributed value through untouched (``reduce_non_distributed_value``
   returns a MEAN as is), so the bug stays hidden there; the multi-worker
   strategy sends the tuple to a cross-worker all-reduce, which tries to
   convert it to one tensor: "Attempt to convert a value (PerReplica ...)
   with an unsupported type". The replacement takes each leaf's first local
   replica value instead: same shapes and dtypes, no communication.

2. ``reduce_per_replica`` (the logs returned by the train and test steps)
   reduces a multi-worker ``"auto"``/``"mean"`` reduction with
   ``strategy.reduce("MEAN", v, axis=0)``, a mean *within* each replica's
   tensor along axis 0. The logs are scalars, so this fails ("Invalid
   reduction dimension 0 for input with 0 dimensions") as soon as fix 1 lets
   training start. The replacement uses ``axis=None``, the mean *across*
   replicas, which is what the single-worker branch computes
   (``tf.reduce_mean(local_results, axis=0)`` over the replica axis).

3. ``keras.callbacks.BackupAndRestore`` writes ``latest.weights.h5`` and
   deletes ``backup_dir`` from every worker at once: on a shared file system
   (always, on one machine) the workers race on ``makedirs``, on the HDF5
   file and on ``rmtree``. ``tf.keras`` let only the chief keep the backup.
   The replacement does the same: non-chief workers still call
   ``save_weights`` (reading variables can take part in collectives, so all
   workers must do it) but into a private temporary directory that is
   discarded, and they leave the deletion to the chief. Every worker
   restores from ``backup_dir``, so on several machines it must be a shared
   path (as with ``tf.keras``).

Each fix is applied only if (a) Keras is in the version range it was
written for, :data:`KNOWN_AFFECTED_KERAS`, (b) the backend is TensorFlow,
and (c) a probe of the upstream source still finds the faulty code. When a
Keras release changes that code (a fix upstream, or a refactor this patch
would not understand), the probe fails and the upstream code runs unchanged:
the patch turns itself off. :func:`enable_multi_worker_fit` reports which
fixes are active and why the others are not.

Not covered: ``train_on_batch``/``test_on_batch`` (they do not go through
the distributed iterator) and ``ModelCheckpoint``, which, like the original
``BackupAndRestore``, writes from every worker.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Callable

import keras

from keras_optsuite import _upstream
from keras_optsuite._upstream import UpstreamPatch, keras_version

#: ``[first, last)`` Keras versions the fix is for: the failure is reported
#: since Keras 3.0 / TensorFlow 2.16 (tensorflow/tensorflow#72388,
#: keras-team/keras#20585) and was checked here on 3.15.1. Within the range
#: the source probe still decides; past it the fix is off until someone
#: checks the new release and moves the bound.
KNOWN_AFFECTED_KERAS = ((3, 0, 0), (3, 16, 0))


def _is_multi_worker(strategy: Any) -> bool:
    """A MultiWorkerMirroredStrategy that spans more than one worker."""
    import tensorflow as tf

    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return bool(strategy.extended._in_multi_worker_mode())


def _first_local_value(strategy: Any, value: Any) -> Any:
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def _per_replica_element_spec(iterator: Any) -> Any:
    """The ``TypeSpec`` structure of one replica's batch of ``iterator``'s data, or None."""
    import tensorflow as tf

    spec = getattr(getattr(iterator, "_distributed_dataset", None), "element_spec", None)
    if spec is None:
        return None

    def one_replica(component: Any) -> Any:
        replicas = getattr(component, "_value_specs", None)  # a PerReplicaSpec
        component = replicas[0] if replicas else component
        return component if hasattr(component, "shape") and hasattr(component, "dtype") else None

    specs = tf.nest.map_structure(one_replica, spec)
    return None if any(leaf is None for leaf in tf.nest.flatten(specs)) else specs


# --- the replacements --------------------------------------------------------
def _make_maybe_symbolic_build(original: Callable) -> Callable:
    tree = _upstream.tree

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not _is_multi_worker(strategy):
            return original(self, iterator=iterator, data_batch=data_batch)
        # Only shapes and dtypes are needed: the dataset's element spec has
        # them. Pulling a batch (upstream) would also run the input pipeline
        # ahead on a throw-away iterator, advancing its random generators
        # (MixUp/CutMix in tf.data would then mix differently than on one
        # device).
        data_batch = _per_replica_element_spec(iterator)
        if data_batch is None:  # one local replica's batch has them too
            for _, _, distributed_iterator in iterator:
                batch = next(distributed_iterator)
                data_batch = tree.map_structure(
                    lambda value: _first_local_value(strategy, value), batch
                )
                break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    return _maybe_symbolic_build


def _make_reduce_per_replica(original: Callable) -> Callable:
    tree = _upstream.tree

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and _is_multi_worker(strategy):
            # Across replicas, as the single-worker branch does (upstream: axis=0).
            return tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None), values
            )
        return original(values, strategy, reduction)

    return reduce_per_replica


def _non_chief_worker(callback: Any) -> bool:
    strategy = getattr(callback.model, "distribute_strategy", None)
    return strategy is not None and _is_multi_worker(strategy) and not strategy.extended.should_checkpoint


def _make_backup_save(original: Callable) -> Callable:
    def _save_model(self):
        if not _non_chief_worker(self):
            return original(self)
        # Same collective reads as the chief, written where nobody else looks.
        with tempfile.TemporaryDirectory(prefix="keras_optsuite_backup_") as scratch:
            self.model.save_weights(os.path.join(scratch, "latest.weights.h5"))

    return _save_model


def _make_backup_train_end(original: Callable) -> Callable:
    def on_train_end(self, logs=None):
        if _non_chief_worker(self):
            return  # the chief deletes the shared backup
        return original(self, logs)

    return on_train_end


# --- the patches ------------------------------------------------------------------
_PURPOSE = "multi-worker model.fit (keras-team/keras#20585), see keras_optsuite.distribute"


def _Fix(
    *, name: str, owner: Callable[[], Any], attribute: str, faulty_code: tuple[str, ...],
    make: Callable[[Callable], Callable],
) -> UpstreamPatch:
    """A fix of faulty upstream code: off (not needed) once ``faulty_code`` is gone."""
    return UpstreamPatch(
        name=name, owner=owner, attribute=attribute, expected_source=faulty_code, make=make,
        fixes_upstream_bug=True, purpose=_PURPOSE,
    )


def _trainer_class() -> Any:
    return _upstream.tensorflow_trainer.TensorFlowTrainer


def _trainer_module() -> Any:
    return _upstream.tensorflow_trainer


_FIXES = (
    _Fix(
        name="symbolic_build",
        owner=_trainer_class,
        attribute="_maybe_symbolic_build",
        faulty_code=(
            'data_batch=self.distribute_strategy.reduce("MEAN",maybe_distributed_data_batch,',
        ),
        make=_make_maybe_symbolic_build,
    ),
    _Fix(
        name="reduce_logs",
        owner=_trainer_module,
        attribute="reduce_per_replica",
        faulty_code=(
            "if_collective_all_reduce_multi_worker(strategy):",
            'returnstrategy.reduce("MEAN",v,axis=0)',
        ),
        make=_make_reduce_per_replica,
    ),
    _Fix(
        name="backup_and_restore_save",
        owner=lambda: keras.callbacks.BackupAndRestore,
        attribute="_save_model",
        faulty_code=(
            "file_utils.makedirs(self.backup_dir)",
            "self.model.save_weights(filepath=self._weights_path,overwrite=True)",
        ),
        make=_make_backup_save,
    ),
    _Fix(
        name="backup_and_restore_cleanup",
        owner=lambda: keras.callbacks.BackupAndRestore,
        attribute="on_train_end",
        faulty_code=("file_utils.rmtree(self.backup_dir)",),
        make=_make_backup_train_end,
    ),
)


def _keras_version() -> tuple[int, ...]:
    return keras_version()


def _why_not_needed(fix: UpstreamPatch) -> str | None:
    """None if ``fix`` applies to this Keras, else the reason it does not."""
    return _upstream.why_refused(fix, KNOWN_AFFECTED_KERAS)


def enable_multi_worker_fit() -> dict[str, str]:
    """Apply the fixes this Keras needs for multi-worker ``fit``; idempotent.

    Importing ``keras_optsuite.distribute`` calls it. Each fix is applied
    only when the installed Keras still has the faulty code (see the module
    docstring), so upgrading Keras turns it off by itself.

    Returns:
        ``{fix name: "applied" or the reason it was not}``.

    Example:

    >>> from keras_optsuite.distribute import enable_multi_worker_fit
    >>> enable_multi_worker_fit()["symbolic_build"]
    'applied'
    """
    return {fix.name: _upstream.apply_patch(fix, KNOWN_AFFECTED_KERAS) for fix in _FIXES}


def disable_multi_worker_fit() -> None:
    """Put the upstream Keras code back (to compare, or to debug the fix).

    Example:

    >>> from keras_optsuite.distribute import disable_multi_worker_fit
    >>> disable_multi_worker_fit()
    """
    for fix in _FIXES:
        _upstream.restore_patch(fix, "disabled by disable_multi_worker_fit()")
