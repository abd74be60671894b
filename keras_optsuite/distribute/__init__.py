"""tf.distribute support: a strategy factory, multi-worker ``model.fit`` on Keras 3,
a local launcher, parameter-server training with sharded embeddings.

Importing this package makes ``model.fit``, ``evaluate`` and ``predict``
work under ``tf.distribute.MultiWorkerMirroredStrategy`` on Keras 3.15
(keras-team/keras#20585), and ``keras.callbacks.BackupAndRestore`` safe
with several workers: see :func:`enable_multi_worker_fit`. The fix is
version-guarded and probes the installed Keras, so it switches itself off
once Keras no longer needs it.

Data under ``MultiWorkerMirroredStrategy``: batch with the *global* batch
size; every worker gets ``1/N`` of each batch. A ``tf.data`` dataset is
sharded by its ``options.experimental_distribute.auto_shard_policy`` (AUTO:
by file when it reads files, else by data, where every worker reads the
whole pipeline and keeps its share). NumPy arrays are sharded by data;
with ``shuffle=True`` (the default) call ``keras.utils.set_random_seed``
with the same seed on every worker, so that they split one permutation
instead of overlapping. ``BackupAndRestore(backup_dir)`` needs a
``backup_dir`` every worker can read (any path on one machine).

Example (``train.py``, run with ``optsuite launch --workers 2 -- python train.py``
or :func:`launch`)::

    import keras, tensorflow as tf
    import keras_optsuite.distribute  # noqa: F401  (applies the fix)

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    with strategy.scope():
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    # The global batch: each of the N workers gets 1/N of it.
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(1000).repeat().batch(64)
    model.fit(dataset, epochs=3, steps_per_epoch=70,
              callbacks=[keras.callbacks.BackupAndRestore("/tmp/backup")])
"""

from keras_optsuite.distribute._keras_multi_worker_patch import (
    KNOWN_AFFECTED_KERAS,
    disable_multi_worker_fit,
    enable_multi_worker_fit,
)
from keras_optsuite.distribute.devices import split_cpu
from keras_optsuite.distribute.launch import (
    ClusterTask,
    cluster_tasks,
    free_ports,
    launch,
    launch_search,
    search_tasks,
)
from keras_optsuite.distribute.parameter_server import (
    ShardedEmbedding,
    serve_if_worker_or_ps,
    train_with_parameter_servers,
    variable_shards,
)
from keras_optsuite.distribute.strategy import (
    STRATEGY_KINDS,
    StrategyChoice,
    choose_strategy_kind,
    get_strategy,
    read_tf_config,
)

enable_multi_worker_fit()

__all__ = [
    "KNOWN_AFFECTED_KERAS",
    "STRATEGY_KINDS",
    "ClusterTask",
    "ShardedEmbedding",
    "StrategyChoice",
    "choose_strategy_kind",
    "cluster_tasks",
    "disable_multi_worker_fit",
    "enable_multi_worker_fit",
    "free_ports",
    "get_strategy",
    "launch",
    "launch_search",
    "read_tf_config",
    "search_tasks",
    "serve_if_worker_or_ps",
    "split_cpu",
    "train_with_parameter_servers",
    "variable_shards",
]
