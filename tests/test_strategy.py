"""The strategy factory (keras_optsuite.distribute.strategy).

In-process: conftest.py split the CPU into two logical devices, so "auto"
picks MirroredStrategy here. TF_CONFIG is set with monkeypatch; strategies
that would join a cluster (multi-worker, parameter server) are only chosen
(:func:`choose_strategy_kind`) or refused here, never built: building one
reconfigures this process's TensorFlow context. The parameter-server branch
is built for real by the chief in tests/test_parameter_server.py.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from keras_optsuite.distribute.strategy import (
    STRATEGY_KINDS,
    StrategyChoice,
    choose_strategy_kind,
    get_strategy,
    read_tf_config,
)

LOGGER = "keras_optsuite.distribute.strategy"
PS_CLUSTER = {"chief": ["127.0.0.1:7000"], "worker": ["127.0.0.1:7001", "127.0.0.1:7002"],
              "ps": ["127.0.0.1:7003", "127.0.0.1:7004"]}
TWO_WORKERS = {"worker": ["127.0.0.1:7001", "127.0.0.1:7002"]}


@pytest.fixture
def tf_config(monkeypatch):
    """Set TF_CONFIG for one test: ``tf_config(cluster, task_type, index)``."""
    monkeypatch.delenv("TF_CONFIG", raising=False)

    def set_config(cluster, task_type="worker", index=0):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))

    return set_config


def test_auto_picks_mirrored_over_the_logical_cpus_and_logs_why(tf_config, caplog):
    import tensorflow as tf

    caplog.set_level(logging.INFO, logger=LOGGER)
    strategy = get_strategy()
    assert isinstance(strategy, tf.distribute.MirroredStrategy)
    assert strategy.num_replicas_in_sync == 2
    assert isinstance(strategy.extended._cross_device_ops, tf.distribute.ReductionToOneDevice)
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        (LOGGER, logging.INFO,
         "get_strategy('auto') chose 'mirrored': 2 visible devices (/cpu:0, /cpu:1) and no cluster in TF_CONFIG")
    ]


def test_mirrored_strategies_one_after_another_reduce_variables_of_other_shapes():
    """With TensorFlow's default (collective) all-reduce on logical CPUs, the
    second strategy here fails with "Shape mismatch in the collective
    instance" (checked on TF 2.21); ReductionToOneDevice does not."""
    import tensorflow as tf

    for shape in [(3,), (2, 5), (4,)]:
        strategy = get_strategy("mirrored")
        with strategy.scope():
            total = tf.Variable(tf.zeros(shape))

        @tf.function
        def step():
            def add_replica_sum():
                context = tf.distribute.get_replica_context()
                mine = tf.ones(shape) * tf.cast(context.replica_id_in_sync_group + 1, tf.float32)
                total.assign_add(context.all_reduce("SUM", mine))

            strategy.run(add_replica_sum)

        step()
        np.testing.assert_array_equal(total.numpy(), np.full(shape, 3.0))  # 1 + 2, on every replica
        for replica_value in strategy.experimental_local_results(total):
            np.testing.assert_array_equal(replica_value.numpy(), np.full(shape, 3.0))


def test_default_and_one_device_and_explicit_devices(tf_config, caplog):
    import tensorflow as tf

    default = get_strategy("default")
    assert default is tf.distribute.get_strategy() and default.num_replicas_in_sync == 1
    one = get_strategy("default", devices=["/cpu:1"])
    assert isinstance(one, tf.distribute.OneDeviceStrategy)
    assert one.extended.worker_devices == ("/job:localhost/replica:0/task:0/device:CPU:1",)
    caplog.set_level(logging.INFO, logger=LOGGER)
    pinned = get_strategy(devices=["/cpu:0"])
    assert isinstance(pinned, tf.distribute.OneDeviceStrategy)
    assert pinned.extended.worker_devices == ("/job:localhost/replica:0/task:0/device:CPU:0",)
    assert caplog.records[-1].getMessage() == (
        "get_strategy('auto') chose 'default': one device (/cpu:0) and no cluster in TF_CONFIG"
    )
    with pytest.raises(ValueError, match=r"kind='default' runs on one device, got 2: devices=\['/cpu:0', '/cpu:1'\]"):
        get_strategy("default", devices=["/cpu:0", "/cpu:1"])


def test_auto_reads_the_cluster_from_tf_config_or_a_resolver(tf_config):
    import tensorflow as tf

    assert choose_strategy_kind() == StrategyChoice(
        "mirrored", "2 visible devices (/cpu:0, /cpu:1) and no cluster in TF_CONFIG")
    tf_config(PS_CLUSTER, "chief")
    assert choose_strategy_kind() == StrategyChoice(
        "parameter_server", "TF_CONFIG describes a cluster with parameter servers (chief: 1, worker: 2, ps: 2)")
    tf_config(TWO_WORKERS, "worker", 1)
    assert choose_strategy_kind() == StrategyChoice(
        "multi_worker", "TF_CONFIG describes 2 training tasks (worker: 2)")
    tf_config({"worker": ["127.0.0.1:7001"]})
    assert choose_strategy_kind(devices=["/cpu:0"]) == StrategyChoice(
        "default", "one device (/cpu:0) and TF_CONFIG describes a single task (worker: 1)")
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(tf.train.ClusterSpec(PS_CLUSTER))
    assert choose_strategy_kind(cluster_resolver=resolver).kind == "parameter_server"


def test_bad_kind_and_bad_arguments_are_named(tf_config):
    with pytest.raises(ValueError, match="kind must be one of 'auto', 'default', 'mirrored', 'multi_worker', "
                                         "'parameter_server', 'tpu', got kind='gpu'"):
        get_strategy("gpu")
    assert STRATEGY_KINDS[0] == "auto"
    with pytest.raises(ValueError, match=r"devices must be a non-empty list of device names, got devices='/cpu:0'"):
        get_strategy("mirrored", devices="/cpu:0")
    with pytest.raises(ValueError, match=r"variable_partitioner only applies to kind='parameter_server', but the "
                                         r"strategy is 'mirrored' \(get_strategy\('auto'\) chose 'mirrored'\)"):
        get_strategy(variable_partitioner=lambda shape, dtype: [2, 1])
    with pytest.raises(ValueError, match="cross_device_ops only applies to kind='mirrored', but the strategy is 'default'"):
        get_strategy("default", cross_device_ops=object())


def test_cluster_kinds_refuse_what_cannot_work_here(tf_config):
    with pytest.raises(ValueError, match=r"kind='multi_worker' needs a cluster, but TF_CONFIG is not set .*"
                                         r"optsuite launch --workers N"):
        get_strategy("multi_worker")
    with pytest.raises(ValueError, match=r"kind='parameter_server' needs a cluster with 'ps' tasks"):
        get_strategy("parameter_server")
    tf_config(PS_CLUSTER, "worker", 1)
    with pytest.raises(ValueError, match=r"kind='multi_worker' cannot run on a cluster with parameter servers "
                                         r"\(TF_CONFIG: chief: 1, worker: 2, ps: 2\); use kind='parameter_server'"):
        get_strategy("multi_worker")
    with pytest.raises(ValueError, match=r"this process is task worker 1 of a parameter-server cluster: only the "
                                         r"chief builds the ParameterServerStrategy.*serve_if_worker_or_ps"):
        get_strategy()
    with pytest.raises(ValueError, match=r"devices only applies to kind='mirrored' or 'default', but the strategy "
                                         r"is 'parameter_server'"):
        get_strategy(devices=["/cpu:0"])
    tf_config(TWO_WORKERS)
    with pytest.raises(ValueError, match=r"kind='parameter_server' needs a cluster with 'ps' tasks.*"
                                         r"\(TF_CONFIG: worker: 2\)"):
        get_strategy("parameter_server")


def test_tpu_without_a_tpu_says_so(tf_config):
    with pytest.raises(ValueError, match=r"kind='tpu' but this process sees no TPU "
                                         r"\(tf.config.list_physical_devices\('TPU'\) is empty\)"):
        get_strategy("tpu")


def test_malformed_tf_config_is_reported(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{cluster: ")
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid JSON .* got TF_CONFIG='\{cluster: '"):
        read_tf_config()
    monkeypatch.setenv("TF_CONFIG", "[1, 2]")
    with pytest.raises(ValueError, match=r"TF_CONFIG must be a JSON object, got TF_CONFIG='\[1, 2\]'"):
        get_strategy()
    monkeypatch.setenv("TF_CONFIG", "  ")
    assert read_tf_config() == {}
