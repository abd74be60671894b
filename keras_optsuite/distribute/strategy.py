"""Pick and build the right ``tf.distribute`` strategy from the environment.

:func:`get_strategy` reads ``TF_CONFIG`` (the cluster description that
:func:`~keras_optsuite.distribute.launch` and cluster managers set) and the
devices this process sees; :func:`choose_strategy_kind` tells what
``get_strategy("auto")`` would pick, and why, without building anything.
"""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Sequence

from keras_optsuite._validation import check_choice

if TYPE_CHECKING:  # pragma: no cover
    import tensorflow as tf

logger = logging.getLogger(__name__)

#: Accepted values of ``get_strategy(kind=...)``.
STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker", "parameter_server", "tpu")

# Tasks that compute in a MultiWorkerMirroredStrategy cluster (an evaluator
# task, if any, runs on its own).
_TRAINING_TASK_TYPES = ("chief", "worker")


class StrategyChoice(NamedTuple):
    """What ``get_strategy("auto")`` picks (``kind``) and why (``reason``)."""

    kind: str
    reason: str


def read_tf_config() -> dict[str, Any]:
    """The parsed ``TF_CONFIG`` environment variable (``{}`` when unset or empty).

    Raises:
        ValueError: ``TF_CONFIG`` is not a JSON object.
    """
    text = os.environ.get("TF_CONFIG", "")
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}), got TF_CONFIG={text!r}") from None
    if not isinstance(config, dict):
        raise ValueError(f"TF_CONFIG must be a JSON object, got TF_CONFIG={text!r}")
    return config


def choose_strategy_kind(
    devices: Sequence[str] | None = None,
    cluster_resolver: Any = None,
) -> StrategyChoice:
    """What ``get_strategy("auto")`` would build, and why, without building it.

    The rules, first match wins:

    1. A cluster (``cluster_resolver``, else ``TF_CONFIG``) with ``ps`` tasks:
       ``"parameter_server"``.
    2. A cluster with more than one chief/worker task: ``"multi_worker"``.
    3. A physical TPU visible to this process: ``"tpu"``.
    4. More than one device (``devices``, else the visible GPUs, else the
       logical CPUs, e.g. after :func:`~keras_optsuite.distribute.split_cpu`):
       ``"mirrored"``.
    5. Otherwise ``"default"`` (one device; a single-task ``TF_CONFIG`` is
       ignored).

    Example:

    >>> choose_strategy_kind()   # on a laptop without GPUs or TF_CONFIG
    StrategyChoice(kind='default', reason='one device (/cpu:0) and no cluster in TF_CONFIG')
    """
    cluster, source = _cluster(cluster_resolver)
    if cluster:
        summary = _describe_cluster(cluster)
        if cluster.get("ps"):
            return StrategyChoice(
                "parameter_server", f"{source} describes a cluster with parameter servers ({summary})"
            )
        training_tasks = sum(len(cluster.get(role, ())) for role in _TRAINING_TASK_TYPES)
        if training_tasks > 1:
            return StrategyChoice("multi_worker", f"{source} describes {training_tasks} training tasks ({summary})")
    no_cluster = (
        f"{source} describes a single task ({_describe_cluster(cluster)})" if cluster else "no cluster in TF_CONFIG"
    )
    if devices is None:
        tpus = _physical_devices("TPU")
        if tpus:
            return StrategyChoice("tpu", f"{len(tpus)} TPU device(s) visible and {no_cluster}")
    names = list(devices) if devices is not None else _local_devices()
    where = "given" if devices is not None else "visible"
    if len(names) > 1:
        return StrategyChoice("mirrored", f"{len(names)} {where} devices ({', '.join(names)}) and {no_cluster}")
    return StrategyChoice("default", f"one device ({', '.join(names) or 'none'}) and {no_cluster}")


def get_strategy(
    kind: str = "auto",
    *,
    devices: Sequence[str] | None = None,
    variable_partitioner: Callable[..., Any] | None = None,
    cluster_resolver: Any = None,
    cross_device_ops: Any = None,
) -> tf.distribute.Strategy:
    """Build a ``tf.distribute`` strategy: the one the environment calls for, or ``kind``.

    Kinds:

    - ``"auto"``: chooses by the rules of :func:`choose_strategy_kind` and
      logs the choice and the reason (``logging``, INFO, logger
      ``keras_optsuite.distribute.strategy``).
    - ``"default"``: ``tf.distribute.get_strategy()``, TensorFlow's default
      strategy (one device) when called outside any strategy's scope; with
      one entry in ``devices``, a ``OneDeviceStrategy`` on it.
    - ``"mirrored"``: ``MirroredStrategy`` over ``devices`` (default: every
      visible GPU, else every logical CPU). When all the devices are CPUs it
      uses ``cross_device_ops=tf.distribute.ReductionToOneDevice()``: the
      default collective all-reduce has a known problem on logical CPUs (a
      second ``MirroredStrategy`` in the same process, training variables of
      other shapes, hits a collective-key bug). Pass ``cross_device_ops`` to
      override.
    - ``"multi_worker"``: ``MultiWorkerMirroredStrategy`` for the cluster in
      ``TF_CONFIG`` (or ``cluster_resolver``). Importing
      ``keras_optsuite.distribute`` makes ``model.fit`` work with it on Keras 3.
    - ``"parameter_server"``: ``ParameterServerStrategy`` for a cluster with
      ``ps`` tasks, built on the chief (the coordinator). Workers and
      parameter servers do not build a strategy: they call
      :func:`~keras_optsuite.distribute.parameter_server.serve_if_worker_or_ps`.
      ``variable_partitioner`` shards large variables across the parameter
      servers; train with
      :func:`~keras_optsuite.distribute.parameter_server.train_with_parameter_servers`
      (Keras 3's ``model.fit`` does not support this strategy).
    - ``"tpu"``: ``TPUStrategy`` on the local TPU (or ``cluster_resolver``,
      a ``TPUClusterResolver``). Not exercised by this package's tests.

    Args:
        kind: One of :data:`STRATEGY_KINDS`.
        devices: Device names for ``"mirrored"`` / ``"default"`` (and for the
            ``"auto"`` device count).
        variable_partitioner: For ``"parameter_server"`` only, e.g.
            ``tf.distribute.experimental.partitioners.MinSizePartitioner()``.
        cluster_resolver: A cluster resolver to use instead of ``TF_CONFIG``.
        cross_device_ops: For ``"mirrored"`` only: how replicas reduce.

    Raises:
        ValueError: ``kind`` is unknown, or the request cannot be met here
            (e.g. ``"multi_worker"`` without a cluster, ``"tpu"`` without a
            TPU, ``variable_partitioner`` for a strategy that does not
            partition); the message says which and why.

    Example:

    >>> from keras_optsuite.distribute import get_strategy
    >>> strategy = get_strategy()          # logs e.g. "chose 'mirrored': 2 visible devices ..."
    >>> with strategy.scope():
    ...     model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
    ...     model.compile("adam", "mse")
    """
    check_choice("kind", kind, STRATEGY_KINDS)
    if devices is not None:
        if isinstance(devices, (str, bytes)) or not all(isinstance(d, str) for d in devices) or not devices:
            raise ValueError(f"devices must be a non-empty list of device names, got devices={devices!r}")
        devices = list(devices)
    requested = kind
    if kind == "auto":
        choice = choose_strategy_kind(devices, cluster_resolver)
        kind = choice.kind
        logger.info("get_strategy('auto') chose %r: %s", kind, choice.reason)
    why = f" (get_strategy('auto') chose {kind!r})" if requested == "auto" else ""
    if variable_partitioner is not None and kind != "parameter_server":
        raise ValueError(
            f"variable_partitioner only applies to kind='parameter_server', but the strategy is {kind!r}{why}; "
            f"got variable_partitioner={variable_partitioner!r}"
        )
    if cross_device_ops is not None and kind != "mirrored":
        raise ValueError(
            f"cross_device_ops only applies to kind='mirrored', but the strategy is {kind!r}{why}; "
            f"got cross_device_ops={cross_device_ops!r}"
        )
    if devices is not None and kind not in ("default", "mirrored"):
        raise ValueError(
            f"devices only applies to kind='mirrored' or 'default', but the strategy is {kind!r}{why}: "
            f"a cluster strategy uses each task's devices; got devices={devices!r}"
        )
    if cluster_resolver is not None and kind in ("default", "mirrored"):
        raise ValueError(
            f"cluster_resolver does not apply to kind={kind!r}{why}; got cluster_resolver={cluster_resolver!r}"
        )
    builders: dict[str, Callable[..., Any]] = {
        "default": _default,
        "mirrored": _mirrored,
        "multi_worker": _multi_worker,
        "parameter_server": _parameter_server,
        "tpu": _tpu,
    }
    return builders[kind](
        devices=devices,
        variable_partitioner=variable_partitioner,
        cluster_resolver=cluster_resolver,
        cross_device_ops=cross_device_ops,
    )


# ---------------------------------------------------------------------------
# One builder per kind
# ---------------------------------------------------------------------------
def _default(devices: list[str] | None, **_: Any) -> tf.distribute.Strategy:
    import tensorflow as tf

    if devices is None:
        return tf.distribute.get_strategy()
    if len(devices) > 1:
        raise ValueError(
            f"kind='default' runs on one device, got {len(devices)}: devices={devices!r}; "
            "use kind='mirrored' for several"
        )
    return tf.distribute.OneDeviceStrategy(devices[0])


def _mirrored(devices: list[str] | None, cross_device_ops: Any, **_: Any) -> tf.distribute.Strategy:
    import tensorflow as tf

    if devices is None:
        devices = _local_devices()
    if cross_device_ops is None and all(_device_type(name) == "CPU" for name in devices):
        cross_device_ops = tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)


def _multi_worker(cluster_resolver: Any, **_: Any) -> tf.distribute.Strategy:
    import tensorflow as tf

    # The model.fit fix for Keras 3 is already applied: importing this module
    # ran keras_optsuite/distribute/__init__.py.
    cluster, source = _cluster(cluster_resolver)
    if not cluster:
        raise ValueError(
            "kind='multi_worker' needs a cluster, but TF_CONFIG is not set (or has no 'cluster') and no "
            "cluster_resolver was given: start the workers with `optsuite launch --workers N -- ...` "
            "(which sets TF_CONFIG), or use kind='mirrored' for the devices of this machine"
        )
    if cluster.get("ps"):
        raise ValueError(
            f"kind='multi_worker' cannot run on a cluster with parameter servers ({source}: "
            f"{_describe_cluster(cluster)}); use kind='parameter_server'"
        )
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=cluster_resolver)


def _parameter_server(cluster_resolver: Any, variable_partitioner: Any, **_: Any) -> tf.distribute.Strategy:
    import tensorflow as tf

    cluster, source = _cluster(cluster_resolver)
    if not cluster or not cluster.get("ps"):
        described = f" ({source}: {_describe_cluster(cluster)})" if cluster else ""
        raise ValueError(
            "kind='parameter_server' needs a cluster with 'ps' tasks, a 'chief' and workers in TF_CONFIG "
            f"or cluster_resolver{described}: start one with "
            "`optsuite launch --workers N --ps M -- ...`"
        )
    if not cluster.get("worker"):
        raise ValueError(f"kind='parameter_server' needs at least one 'worker' task, {source} has none")
    if cluster_resolver is None:
        task = read_tf_config().get("task", {})
        task_type = task.get("type")
        if task_type in ("worker", "ps"):
            raise ValueError(
                f"this process is task {task_type} {task.get('index', 0)} of a parameter-server cluster: "
                "only the chief builds the ParameterServerStrategy; workers and parameter servers call "
                "keras_optsuite.distribute.parameter_server.serve_if_worker_or_ps() and serve"
            )
        cluster_resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    return tf.distribute.experimental.ParameterServerStrategy(
        cluster_resolver, variable_partitioner=variable_partitioner
    )


def _tpu(cluster_resolver: Any, **_: Any) -> tf.distribute.Strategy:
    import tensorflow as tf

    if cluster_resolver is None:
        if not _physical_devices("TPU"):
            raise ValueError(
                "kind='tpu' but this process sees no TPU (tf.config.list_physical_devices('TPU') is "
                "empty) and no cluster_resolver was given; pass "
                "cluster_resolver=tf.distribute.cluster_resolver.TPUClusterResolver(tpu=...) for a remote "
                "TPU, or use another kind"
            )
        cluster_resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
    tf.config.experimental_connect_to_cluster(cluster_resolver)
    tf.tpu.experimental.initialize_tpu_system(cluster_resolver)
    return tf.distribute.TPUStrategy(cluster_resolver)


# ---------------------------------------------------------------------------
# Environment
# ---------------------------------------------------------------------------
def _cluster(cluster_resolver: Any) -> tuple[dict[str, list[str]], str]:
    """The cluster as ``{role: [address, ...]}`` and where it came from."""
    if cluster_resolver is not None:
        spec = cluster_resolver.cluster_spec()
        return dict(spec.as_dict()) if spec else {}, "cluster_resolver"
    cluster = read_tf_config().get("cluster") or {}
    if not isinstance(cluster, dict):
        raise ValueError(f"TF_CONFIG['cluster'] must be an object of task lists, got {cluster!r}")
    return cluster, "TF_CONFIG"


def _describe_cluster(cluster: dict[str, Any]) -> str:
    return ", ".join(f"{role}: {len(addresses)}" for role, addresses in cluster.items()) or "no tasks"


def _physical_devices(device_type: str) -> list[Any]:
    import tensorflow as tf

    return tf.config.list_physical_devices(device_type)


def _local_devices() -> list[str]:
    """The visible GPUs, else the logical CPUs, as short names (``/gpu:0``)."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    chosen = gpus or tf.config.list_logical_devices("CPU")
    return [_short_name(device.name) for device in chosen]


def _short_name(name: str) -> str:
    import tensorflow as tf

    spec = tf.DeviceSpec.from_string(name)
    return f"/{spec.device_type.lower()}:{spec.device_index}"


def _device_type(name: str) -> str:
    import tensorflow as tf

    return (tf.DeviceSpec.from_string(name).device_type or "").upper()
