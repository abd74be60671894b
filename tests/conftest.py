"""Test-session setup: two logical CPU devices, quiet TensorFlow, shared data.

TensorFlow must see the logical-device split before it initializes, so it
happens here, at import time, once per test process.
"""

from __future__ import annotations

import gc
import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# The suite runs in two pytest-xdist processes on two cores: one op thread
# each keeps them from fighting over the cores.
os.environ.setdefault("OPTSUITE_TEST_THREADS", "1")
# MLflow 3 sends usage telemetry by default: the suite makes no network calls.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

sys.path.insert(0, os.path.dirname(__file__))  # for `import references.<name>`

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_threads = int(os.environ["OPTSUITE_TEST_THREADS"])
tf.config.threading.set_intra_op_parallelism_threads(_threads)
tf.config.threading.set_inter_op_parallelism_threads(_threads)
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)

import keras  # noqa: E402

# The real-MLflow-server fixtures, for every test module (tests/mlflow_server.py).
from mlflow_server import (  # noqa: E402,F401
    embedded_tracking_uri,
    mlflow_server,
    shared_embedded_tracking_uri,
    shared_mlflow_server_process,
)

import mlflow  # noqa: E402,F401  (imported once here, so gc.freeze below covers it)

# Every test ends with keras.backend.clear_session(), whose gc.collect() walks
# every live object: the millions TensorFlow, Keras and MLflow create at
# import made it cost seconds per test (half the suite's time). Objects alive
# now live until exit anyway; freezing them leaves the collections to scan
# only what the tests create.
gc.freeze()



@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Make ``pytest.mark.xdist_group`` work again under ``--dist loadgroup``.

    pytest-xdist 3.8 tags a grouped test by rewriting ``item._nodeid`` to
    ``<nodeid>@<group>``; pytest 9 derives ``nodeid`` from ``item._id``
    instead, so the groups were silently ignored and module-scoped fixtures
    (a real MLflow server, a multi-worker launch) ran on both xdist workers.
    """
    if not getattr(config.option, "loadgroup", False):
        return
    from _pytest.nodeid import coerce_node_id

    for item in items:
        groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                         for m in item.iter_markers("xdist_group")})
        if groups and "@" not in item.nodeid:
            item._id = coerce_node_id(f"{item.nodeid}@{'_'.join(groups)}")


LOGICAL_CPUS = ["/cpu:0", "/cpu:1"]


def mirrored_strategy() -> tf.distribute.MirroredStrategy:
    """MirroredStrategy over the two logical CPUs, reducing on one device.

    Its default on CPUs, collective all-reduce, numbers its collective
    instances per strategy from the same start: a second strategy in the same
    process whose reductions have other shapes or dtypes then fails ("Shape
    mismatch in the collective instance 100"), so which test broke depended on
    how xdist ordered them. keras_optsuite's ``get_strategy("mirrored")``
    makes the same choice; the collective path is covered by the real
    MultiWorkerMirrored workers.
    """
    return tf.distribute.MirroredStrategy(
        LOGICAL_CPUS, cross_device_ops=tf.distribute.ReductionToOneDevice()
    )

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def dense_model(seed=0, hidden=16, outputs=10, inputs=64):
    """The small MLP the training checks use, with weights fixed by ``seed``."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((inputs,)),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(outputs),
        ]
    )


def assert_weights_close(a, b, rtol, atol):
    """Two models (or lists of arrays) have as many weights, each close to the other's."""
    wa = a.get_weights() if hasattr(a, "get_weights") else list(a)
    wb = b.get_weights() if hasattr(b, "get_weights") else list(b)
    assert len(wa) == len(wb), f"{len(wa)} weights vs {len(wb)}"
    for i, (x, z) in enumerate(zip(wa, wb)):
        np.testing.assert_allclose(x, z, rtol=rtol, atol=atol, err_msg=f"weight {i}")


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    """Every test starts from float32, no mixed precision, fixed seeds."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
    keras.backend.clear_session()
    # What survived this collection is frozen too, so the next test's
    # collection scans only what that test created (measured on 143 contract
    # tests: 156 s -> 103 s, same peak memory). Garbage cycles that later
    # include a frozen object are never reclaimed: memory grows slowly over
    # a worker's life.
    gc.freeze()


@pytest.fixture(autouse=True)
def _mlflow_process_state_restored():
    """A test that sets MLflow's process-wide state (tracking URI, experiment, active runs) leaves none behind.

    ``mlflow.set_tracking_uri`` and ``mlflow.set_experiment`` write the
    environment as well as module globals; both are put back, and runs a
    test left active are ended, so the next test on this worker starts clean.
    """
    from mlflow.tracking import fluent
    from mlflow.tracking._tracking_service import utils as tracking_utils

    names = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME")
    environment = {name: os.environ.get(name) for name in names}
    uri, experiment_id = tracking_utils._tracking_uri, fluent._active_experiment_id
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()
    tracking_utils._tracking_uri, fluent._active_experiment_id = uri, experiment_id
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled 8x8 digits: features in [0, 1], integer labels."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    return x, y
