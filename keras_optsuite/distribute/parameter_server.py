"""Parameter-server training of Keras 3 models, with variables sharded across the servers.

``tf.distribute.experimental.ParameterServerStrategy`` keeps the variables on
parameter-server tasks; a coordinator (the chief) schedules training steps
on workers, which run them asynchronously. With a ``variable_partitioner``
a large variable (an embedding table) is split row-wise into a
``ShardedVariable`` whose shards live on different parameter servers: model
parallelism for tables too large for one machine.

What works on Keras 3.15 + TensorFlow 2.21 (checked here):

- Keras variables created under the strategy's scope are placed on the
  parameter servers, and a partitioner shards them: the Keras variable's
  ``value`` is then a ``ShardedVariable`` (``keras.layers.Embedding`` and
  ``Dense`` kernels alike).
- Keras optimizers update the *shards* correctly when handed the shards as
  their variables: their slots (Adam's moments...) are created beside each
  shard, on the same parameter server, so optimizer state is sharded too.
- The forward pass and the gradients through ``keras.layers.Embedding`` are
  correct, but ``Embedding`` converts the sharded table to one tensor (every
  shard is read whole, every step). :class:`ShardedEmbedding` looks up only
  the rows it needs, shard by shard (``tf.nn.embedding_lookup``).

What does not work, and why:

- ``model.fit``: Keras 3's TensorFlow trainer has no ``ClusterCoordinator``
  support (tf.keras 2 had it, through ``DatasetCreator``). It iterates the
  distributed dataset on the coordinator, which fails with "To use this
  dataset, you need to pass this dataset to
  ClusterCoordinator.create_per_worker_dataset", and would run
  ``strategy.run`` itself instead of scheduling steps on workers.
  ``evaluate`` and ``predict`` read their data the same way.
- ``model.train_step`` (and any ``tape.gradient(loss,
  model.trainable_variables)``) with sharded variables: a Keras variable
  exposes its TensorFlow variable's ``handle`` to the gradient tape, and a
  ``ShardedVariable`` has none ("'ShardedVariable' object has no attribute
  'handle'"). And an optimizer built for the Keras variables (as ``fit``
  builds it) creates unsharded slots, each as large as the whole table.

- Optimizers whose step uses statistics of each whole variable (Shampoo,
  SOAP, LARS, NovoGrad, Lamb, Adafactor, Muon, gradient centralization, AGC)
  on sharded variables: the optimizer is handed the shards, so it would
  compute those statistics per shard. :func:`train_with_parameter_servers`
  refuses them there with a ``ValueError`` (elementwise methods and sums over
  all variables, e.g. Prodigy's estimate or a global-norm clip, are exact).

What we offer instead: :func:`train_with_parameter_servers`, a custom
training loop on ``ClusterCoordinator`` that differentiates with respect to
the shards and gives them to the model's own optimizer, plus
:func:`serve_if_worker_or_ps` for the worker and parameter-server processes
and :func:`variable_shards` to see where a variable lives. Metrics compiled
into the model are not updated; evaluate afterwards (e.g. call the model on
the coordinator, which reads the variables from the parameter servers).

Training is asynchronous: a worker reads the variables, computes a gradient
and applies it while other workers do the same, so the result depends on
timing and is not reproducible. With ``wait_each_step=True`` each step runs
alone (on whichever worker is free) after the previous one has been
applied: plain sequential training, equal to single-process training when
every worker sees the same batches.

Under asynchronous training ``optimizer.iterations`` counts fewer steps than
ran: Keras increments it with a read-then-assign (``Variable.assign_add`` is
``assign(self + value)``), so concurrent steps can overwrite each other's
increment, and Adam-style bias corrections see a slightly smaller step
count. The model variables and slots are updated by TensorFlow's own
``assign_add``/``assign_sub`` ops on the parameter servers, which do not lose
updates (steps still read values that other steps are changing: that is
asynchronous training).
"""

from __future__ import annotations

import json
import os
import weakref
from typing import TYPE_CHECKING, Any, Callable

import keras

from keras_optsuite._validation import check_bool, check_positive_int

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

# Optimizers this module built, with the ids of the shards they were built for.
_built_for: weakref.WeakKeyDictionary[Any, tuple[int, ...]] = weakref.WeakKeyDictionary()


def serve_if_worker_or_ps(protocol: str = "grpc") -> None:
    """In a parameter-server cluster, serve forever if this process is a worker or a ps.

    Reads ``TF_CONFIG``. On a ``worker`` or ``ps`` task, starts this task's
    ``tf.distribute.Server`` and blocks until the process is stopped (the
    chief's coordinator sends the work; :func:`~keras_optsuite.distribute.launch`
    stops these tasks when the chief exits). On the chief, without
    ``TF_CONFIG``, or in a cluster without ``ps`` tasks, returns at once.
    Call it at the top of the training script, before building a model.
    A serving task prints one line, ``serving as worker 0 of {cluster}``.

    Workers run with at least 2 inter-op threads: a parameter-server worker
    with one deadlocks.

    Example::

        from keras_optsuite.distribute import get_strategy
        from keras_optsuite.distribute.parameter_server import serve_if_worker_or_ps

        serve_if_worker_or_ps()          # workers and parameter servers stay here
        strategy = get_strategy("parameter_server")   # the chief continues
    """
    import tensorflow as tf

    from keras_optsuite.distribute.strategy import read_tf_config

    config = read_tf_config()
    task = config.get("task") or {}
    if not (config.get("cluster") or {}).get("ps") or task.get("type") not in ("worker", "ps"):
        return
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    server_config = tf.compat.v1.ConfigProto()
    inter_op = int(os.environ.get("TF_NUM_INTEROP_THREADS", "0") or 0)
    server_config.inter_op_parallelism_threads = max(2, inter_op)
    intra_op = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)
    server_config.intra_op_parallelism_threads = intra_op
    server = tf.distribute.Server(
        resolver.cluster_spec(),
        job_name=resolver.task_type,
        task_index=resolver.task_id,
        protocol=resolver.rpc_layer or protocol,
        config=server_config,
        start=True,
    )
    print(f"serving as {resolver.task_type} {resolver.task_id} of {json.dumps(config['cluster'])}", flush=True)
    server.join()


def variable_shards(variable: Any) -> list[Any]:
    """The TensorFlow variables that hold ``variable``: its shards, or itself.

    ``variable`` may be a Keras variable, a ``ShardedVariable`` or a
    ``tf.Variable``. Each shard has ``.device`` (e.g.
    ``/job:ps/replica:0/task:1/device:CPU:0``) and ``.shape``.

    Example:

    >>> [shard.device for shard in variable_shards(embedding.embeddings)]
    ['/job:ps/replica:0/task:0/device:CPU:0', '/job:ps/replica:0/task:1/device:CPU:0']
    """
    import tensorflow as tf

    value = variable.value if isinstance(variable, keras.Variable) else variable
    if isinstance(value, tf.__internal__.distribute.ShardedVariable):
        return list(value.variables)
    return [value]


def _gradient_sources(variables: list[Any]) -> list[Any]:
    """Each sharded Keras variable replaced by its shards (the gradient tape
    and the optimizer need variables with a ``handle``); others unchanged."""
    import tensorflow as tf

    sources: list[Any] = []
    for variable in variables:
        if isinstance(variable.value, tf.__internal__.distribute.ShardedVariable):
            sources.extend(variable.value.variables)
        else:
            sources.append(variable)
    return sources


@keras.saving.register_keras_serializable(package="keras_optsuite")
class ShardedEmbedding(keras.layers.Embedding):
    """``keras.layers.Embedding`` that reads only the rows it needs from a sharded table.

    Same arguments, weights and results as ``Embedding``. When the table is
    a ``ShardedVariable`` (created under a ``ParameterServerStrategy`` with a
    ``variable_partitioner``), the lookup gathers the requested rows on each
    shard (``tf.nn.embedding_lookup``) instead of concatenating the whole
    table first, and the gradient reaches each shard as sparse rows. Elsewhere
    (no strategy, unsharded, LoRA, quantized) it is exactly ``Embedding``.

    Example::

        with strategy.scope():    # ParameterServerStrategy with a partitioner
            model = keras.Sequential([keras.Input((5,), dtype="int32"),
                                      ShardedEmbedding(1_000_000, 64),
                                      keras.layers.GlobalAveragePooling1D(),
                                      keras.layers.Dense(1)])
    """

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        table = getattr(self._embeddings, "value", None) if self.built else None
        if (
            isinstance(table, tf.__internal__.distribute.ShardedVariable)
            and not self.lora_enabled
            and not self.quantization_mode
        ):
            ids = inputs if inputs.dtype in (tf.int32, tf.int64) else tf.cast(inputs, tf.int32)
            return tf.cast(tf.nn.embedding_lookup(table, ids), self.compute_dtype)
        return super().call(inputs)


def train_with_parameter_servers(
    model: keras.Model,
    dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
    steps: int,
    *,
    wait_each_step: bool = False,
) -> list[float]:
    """Train a compiled Keras model for ``steps`` steps on the workers of a parameter-server cluster.

    Call it on the chief. The model and its optimizer must be created and
    compiled inside ``strategy.scope()`` of a ``ParameterServerStrategy``
    (see :func:`~keras_optsuite.distribute.get_strategy`). Each worker builds
    its own input pipeline with ``dataset_fn`` (as in
    ``strategy.distribute_datasets_from_function``); each step takes one
    batch from the worker that runs it, computes the compiled loss (with
    the model's regularization losses) and applies the model's optimizer to
    the variables, shard by shard for sharded ones. At the end, as ``fit``
    does, it calls the optimizer's ``finalize_variable_values``: weight
    averaging (``ExponentialMovingAverage``, ``SWA``) and schedule-free
    methods leave their ``final_weights`` in the model. Calling it again
    continues training with the same optimizer state (as a second ``fit``).

    Args:
        model: A Keras model compiled with an optimizer and a loss, built
            under the strategy's scope.
        dataset_fn: ``input_context -> tf.data.Dataset`` yielding batches
            ``(x, y)`` or ``(x, y, sample_weight)``; it must not run out
            (``.repeat()``).
        steps: Number of training steps to schedule, >= 1.
        wait_each_step: Wait for each step to finish before scheduling the
            next: sequential, reproducible training (slower). Default False:
            asynchronous training, all workers busy.

    Returns:
        The loss of each step, in the order the steps were scheduled.

    Raises:
        ValueError: The model was not created under a
            ``ParameterServerStrategy``, is not compiled, or its optimizer was
            created outside the scope, already built for other variables,
            needs a closure (SAM, ASAM, GSAM, AdaHessian, Sophia, LBFGS, or a
            wrapper around one), or uses statistics of each whole variable
            (Shampoo, SOAP, LARS, NovoGrad, Lamb, Adafactor, Muon, or a chain
            with GradientCentralization or AGC, Ranger too) while some
            variable is sharded.

    Example::

        serve_if_worker_or_ps()
        strategy = get_strategy("parameter_server",
            variable_partitioner=tf.distribute.experimental.partitioners.MinSizePartitioner())
        with strategy.scope():
            model = keras.Sequential([keras.Input((5,), dtype="int32"), ShardedEmbedding(100_000, 32),
                                      keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(1)])
            model.compile(keras.optimizers.Adam(1e-3), "mse")

        def dataset_fn(input_context):
            batch = input_context.get_per_replica_batch_size(64)
            return make_dataset().shard(input_context.num_input_pipelines,
                                        input_context.input_pipeline_id).repeat().batch(batch)

        losses = train_with_parameter_servers(model, dataset_fn, steps=1000)
    """
    import tensorflow as tf

    steps = check_positive_int("steps", steps)
    wait_each_step = check_bool("wait_each_step", wait_each_step)
    if not callable(dataset_fn):
        raise ValueError(
            f"dataset_fn must be a callable (input_context -> tf.data.Dataset), got dataset_fn={dataset_fn!r}"
        )
    _check_no_closure(getattr(model, "optimizer", None))
    strategy = model.distribute_strategy
    if not isinstance(strategy, tf.distribute.experimental.ParameterServerStrategy):
        raise ValueError(
            "model must be created under a ParameterServerStrategy scope, but its strategy is "
            f"{type(strategy).__name__}: build and compile it inside `with strategy.scope():`"
        )
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(model, "compiled", False):
        raise ValueError(
            f"model must be compiled with an optimizer and a loss inside strategy.scope(), got model {model.name!r} "
            "uncompiled"
        )
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if getattr(inner, "_distribution_strategy", strategy) is not strategy:
        raise ValueError(
            f"the optimizer {optimizer.name!r} was created outside the ParameterServerStrategy scope: "
            "create it (or call model.compile) inside `with strategy.scope():`"
        )
    sources = _gradient_sources(model.trainable_variables)
    _check_elementwise_on_shards(optimizer, model.trainable_variables, sources)
    _build_optimizer(optimizer, sources, strategy)

    coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(strategy)
    per_worker = coordinator.create_per_worker_dataset(strategy.distribute_datasets_from_function(dataset_fn))
    iterator = iter(per_worker)

    def replica_step(data: Any) -> Any:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            y_pred = model(x, training=True)
            # Keras scales the loss by 1/replicas for the gradient sum.
            loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
            scaled = optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled, sources)
        optimizer.apply(gradients, sources)
        return loss * strategy.num_replicas_in_sync  # the loss of this replica's batch

    @tf.function
    def worker_step(iterator: Any) -> Any:
        per_replica = strategy.run(replica_step, args=(next(iterator),))
        return strategy.reduce("MEAN", per_replica, axis=None)

    results = []
    for _ in range(steps):
        results.append(coordinator.schedule(worker_step, args=(iterator,)))
        if wait_each_step:
            coordinator.join()
    coordinator.join()
    # As fit ends: weight averaging and schedule-free methods leave their final_weights.
    optimizer.finalize_variable_values(sources)
    return [float(result.fetch()) for result in results]


def _check_no_closure(optimizer: Any) -> None:
    """Reject an optimizer that needs a closure (SAM family, AdaHessian, Sophia, LBFGS).

    Each step here hands the optimizer gradients only; such a method needs
    the loss again on the same batch (a second pass, Hessian-vector products,
    a line search), which this loop does not provide.
    """
    from keras_optsuite.optimizers.closure import needs_closure

    if optimizer is not None and needs_closure(optimizer):
        raise ValueError(
            f"train_with_parameter_servers cannot run {type(optimizer).__name__} ({optimizer.name!r}): "
            "it needs a closure (the loss and gradients again on the same batch), and each "
            "parameter-server step hands the optimizer gradients only. Use an optimizer that "
            "steps on gradients alone."
        )


def _whole_variable_methods(optimizer: Any) -> list[str]:
    """The methods inside ``optimizer`` whose step uses statistics of each whole
    variable: Kronecker factors (Shampoo, SOAP), layer-wise norms (LARS,
    NovoGrad, Keras's Lamb), factored moments (Keras's Adafactor), Keras's
    Muon orthogonalization, and the gradient transformations that reduce over a
    variable's axes (GradientCentralization, AGC, also inside Ranger)."""
    from keras_optsuite.optimizers._wrapper import iter_optimizers

    keras_per_tensor = (keras.optimizers.Adafactor, keras.optimizers.Lamb, keras.optimizers.Muon)
    names = []
    for nested in iter_optimizers(optimizer):
        if getattr(nested, "whole_variable_statistics", False) or isinstance(nested, keras_per_tensor):
            names.append(type(nested).__name__)
        names += [type(t).__name__ for t in getattr(nested, "transforms", ())
                  if getattr(t, "whole_variable_statistics", False)]
    return list(dict.fromkeys(names))


def _check_elementwise_on_shards(optimizer: Any, variables: list[Any], sources: list[Any]) -> None:
    """Reject a method with per-variable statistics when some variable is sharded.

    The optimizer is handed each shard as a variable of its own, so such a
    method would compute its statistics per shard (row block) and step
    differently from the same model unsharded.
    """
    if len(sources) == len(variables):
        return
    methods = _whole_variable_methods(optimizer)
    if methods:
        sharded = [v.path for v in variables if len(variable_shards(v)) > 1]
        raise ValueError(
            f"train_with_parameter_servers cannot run {', '.join(methods)} ({optimizer.name!r}) on sharded "
            f"variables ({', '.join(sharded)}): its step uses statistics of each whole variable "
            "(a matrix factor, a layer norm or a mean over the variable's axes), and the optimizer is handed "
            "each shard as a variable of its own, so it would step differently from the unsharded model. "
            "Use a variable_partitioner that leaves these variables whole, or an optimizer that acts on "
            "each coordinate or on sums over all variables."
        )


def _build_optimizer(optimizer: Any, sources: list[Any], strategy: Any) -> None:
    """Create the optimizer's slots for the shards, beside each shard, once."""
    key = tuple(id(source) for source in sources)
    if optimizer.built:
        if _built_for.get(optimizer) == key:
            return
        raise ValueError(
            f"the optimizer {optimizer.name!r} is already built for other variables (by fit, apply or another "
            "model): compile the model with a new optimizer before train_with_parameter_servers"
        )
    with strategy.scope():
        optimizer.build(sources)
    _built_for[optimizer] = key
