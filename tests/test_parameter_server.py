"""Parameter-server training with sharded variables (keras_optsuite.distribute.parameter_server).

One slow test module fixture launches a real cluster on 127.0.0.1: 1 chief,
2 workers and 2 parameter servers (tests/workers/parameter_server_training.py);
the checks compare its results with the same model trained by Keras's own
``fit`` in this process, for Keras's Adam and for a set of this package's
optimizers and wrappers (one launch: the job trains them one after another). The fast tests cover argument errors and the
layer without a cluster.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from keras_optsuite.distribute.launch import launch
from keras_optsuite.distribute.parameter_server import (
    ShardedEmbedding,
    serve_if_worker_or_ps,
    train_with_parameter_servers,
    variable_shards,
)

WORKER_SCRIPT = Path(__file__).parent / "workers" / "parameter_server_training.py"
ONE_THREAD = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1"}
PS_DEVICES = ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"]

# One xdist worker runs the module: its launch fixture runs once.
pytestmark = pytest.mark.xdist_group("parameter_server")


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    """One launch with 5 TensorFlow processes, shared by every check."""
    out = tmp_path_factory.mktemp("parameter-servers")
    output = io.StringIO()
    code = launch([sys.executable, str(WORKER_SCRIPT), str(out)], workers=2, ps=2,
                  env=ONE_THREAD, output=output, timeout=240)
    text = output.getvalue()
    assert code == 0, text[-6000:]
    report = json.loads((out / "chief.json").read_text())
    saved = dict(np.load(out / "chief.npz"))
    return {"lines": text.splitlines(), "report": report, "saved": saved}


def _weights(saved, prefix):
    """The arrays saved as ``{prefix}_0``, ``{prefix}_1``... in order."""
    count = sum(key.startswith(prefix + "_") and key[len(prefix) + 1:].isdigit() for key in saved)
    return [saved[f"{prefix}_{i}"] for i in range(count)]


@pytest.mark.slow
def test_embedding_tables_and_their_optimizer_slots_are_sharded_across_both_parameter_servers(cluster_run):
    report, lines = cluster_run["report"], cluster_run["lines"]
    assert ("[chief 0] get_strategy('auto') chose 'parameter_server': TF_CONFIG describes a cluster with "
            "parameter servers (chief: 1, worker: 2, ps: 2)") in lines
    assert report["strategy"] == "ParameterServerStrategyV2"
    for role in ("worker 0", "worker 1", "ps 0", "ps 1"):
        assert any(line.startswith(f"[{role}] serving as {role} of ") for line in lines)
    placement = report["placement"]
    for table in ("keras_embedding/embeddings", "sharded_embedding/embeddings"):
        assert placement[table] == [{"device": PS_DEVICES[0], "shape": [20, 4]},
                                    {"device": PS_DEVICES[1], "shape": [20, 4]}], table
    # Below the partitioner's minimum size: one variable on one parameter server.
    assert [len(placement[name]) for name in ("head/kernel", "head/bias")] == [1, 1]
    assert {placement["head/kernel"][0]["device"], placement["head/bias"][0]["device"]} == set(PS_DEVICES)
    slots = report["slot_devices"]
    for table in ("keras_embedding", "sharded_embedding"):
        for part in (0, 1):
            for slot in ("momentum", "velocity"):
                assert slots[f"adam/{table}_embeddings_part_{part}_0_{slot}"] == PS_DEVICES[part]
    # ShardedEmbedding gathers rows on each shard; Embedding reads the whole table.
    ops = report["lookup_ops"]
    assert "ResourceGather" in ops["sharded_embedding"] and "ReadVariableOp" not in ops["sharded_embedding"]
    assert "ReadVariableOp" in ops["keras_embedding"] and "ResourceGather" not in ops["keras_embedding"]


@pytest.mark.slow
def test_sequential_steps_on_the_cluster_equal_keras_fit_in_one_process(cluster_run):
    """Phase 1: full-batch steps, each waiting for the previous (any worker
    may run it; every worker sees the same batch), so the result is defined:
    Keras's own ``fit`` with the same initial weights, batch and Adam here.

    Tolerance: rtol 1e-5, atol 1e-6 (measured: bit-identical here; float32
    results may differ in the last bits where the sharded lookup or the
    remote execution orders sums differently).
    """
    from workers import parameter_server_training as job

    report, saved = cluster_run["report"], cluster_run["saved"]
    x, y = job.data()
    reference = job.build_model()
    initial = _weights(saved, "initial")
    reference.set_weights(initial)
    history = reference.fit(x, y, batch_size=job.EXAMPLES, epochs=job.SEQUENTIAL_STEPS, shuffle=False, verbose=0)
    np.testing.assert_allclose(report["sequential_losses"], history.history["loss"], rtol=1e-5)
    got = _weights(saved, "sequential")
    assert len(got) == len(reference.get_weights()) == 4
    for index, (a, b) in enumerate(zip(got, reference.get_weights(), strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"weight {index}")
    assert max(np.abs(a - b).max() for a, b in zip(got, initial)) > 0.1  # training moved the weights
    assert report["sequential_iterations"] == job.SEQUENTIAL_STEPS


METHODS = ["RAdam", "Adan", "Signum", "ScheduleFreeAdamW", "Prodigy", "Lookahead(Adam)",
           "ExponentialMovingAverage(Adam)", "GradientAccumulation(Adam)", "Chain(Adam)"]


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_this_packages_optimizers_and_wrappers_train_on_the_cluster_as_keras_fit_does(cluster_run, name):
    """Phase 1 again for each method (``job.methods()``): a fresh model from the
    same initial weights, full-batch steps one at a time on the cluster, against
    Keras's ``fit`` in this process with the same optimizer. The optimizer sees
    each embedding table as two shards, on two parameter servers: elementwise
    steps, sums over all variables (Prodigy's estimate, the chain's global norm)
    and the wrappers' own state must not notice. Same tolerances as the Adam
    check (float32; sums over shards may add in another order); the averaging
    wrapper's averages are compared too, shards put back together.
    """
    from workers import parameter_server_training as job

    assert METHODS == list(job.methods())
    report, saved = cluster_run["report"], cluster_run["saved"]
    x, y = job.data()
    initial = _weights(saved, "initial")
    reference = job.build_model(job.methods()[name]())
    reference.set_weights(initial)
    history = reference.fit(x, y, batch_size=job.EXAMPLES, epochs=job.METHOD_STEPS, shuffle=False, verbose=0)
    np.testing.assert_allclose(report["methods"][name], history.history["loss"], rtol=1e-5)
    got = _weights(saved, name)
    assert len(got) == len(reference.get_weights()) == 4
    for index, (a, b) in enumerate(zip(got, reference.get_weights(), strict=True)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{name}: weight {index}")
    assert max(np.abs(a - b).max() for a, b in zip(got, initial)) > 1e-3, "training moved the weights"
    averaged = getattr(reference.optimizer, "averaged_variables", None)
    if averaged is not None:
        for index, (a, b) in enumerate(zip(_weights(saved, f"{name}_averaged"), averaged, strict=True)):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{name}: average {index}")


@pytest.mark.slow
def test_a_method_with_per_variable_statistics_is_refused_on_sharded_variables(cluster_run):
    """Shampoo's Kronecker factors of a shard are not those of the table: a clear
    error, before any step, naming the method and the sharded variables."""
    assert cluster_run["report"]["whole_variable_error"] == (
        "ValueError: train_with_parameter_servers cannot run Shampoo ('shampoo') on sharded variables "
        "(keras_embedding/embeddings, sharded_embedding/embeddings): its step uses statistics of each whole "
        "variable (a matrix factor, a layer norm or a mean over the variable's axes), and the optimizer is "
        "handed each shard as a variable of its own, so it would step differently from the unsharded model. "
        "Use a variable_partitioner that leaves these variables whole, or an optimizer that acts on each "
        "coordinate or on sums over all variables."
    )


@pytest.mark.slow
def test_asynchronous_steps_on_both_workers_reduce_the_loss(cluster_run):
    """Phase 2: mini-batches, both workers at once. Asynchronous, so not
    reproducible: check that the loss falls, that the coordinator's
    predictions are the model's, and that every step ran."""
    from workers import parameter_server_training as job

    report, saved = cluster_run["report"], cluster_run["saved"]
    x, y = job.data()
    losses = report["async_losses"]
    assert len(losses) == job.ASYNC_STEPS and all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])

    model = job.build_model()

    def full_data_loss(prefix):
        model.set_weights(_weights(saved, prefix))
        return float(np.mean((model.predict(x, batch_size=job.EXAMPLES, verbose=0) - y) ** 2))

    initial, sequential, final = (full_data_loss(p) for p in ("initial", "sequential", "final"))
    assert final < 0.5 * sequential < 0.5 * initial
    # Called on the coordinator, the model reads the shards from the parameter servers.
    np.testing.assert_allclose(saved["coordinator_predictions"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    # Keras's iteration counter is a read-then-assign: concurrent steps can
    # overwrite each other's increment (documented), never add extra ones.
    assert job.SEQUENTIAL_STEPS < report["iterations"] <= job.SEQUENTIAL_STEPS + job.ASYNC_STEPS


@pytest.mark.slow
def test_what_keras_cannot_do_with_parameter_servers_still_fails_as_documented(cluster_run):
    """If a Keras release fixes either, this fails: update the module docs."""
    report = cluster_run["report"]
    assert report["fit_error"] == (
        "ValueError: To use this dataset, you need to pass this dataset to "
        "ClusterCoordinator.create_per_worker_dataset."
    )
    assert report["keras_variable_gradient_error"] == (
        "AttributeError: 'ShardedVariable' object has no attribute 'handle'"
    )


# ---------------------------------------------------------------------------
# Without a cluster
# ---------------------------------------------------------------------------
def test_train_with_parameter_servers_rejects_models_outside_a_parameter_server_strategy():
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="created under a ParameterServerStrategy scope, but its strategy is _DefaultDistributionStrategy"):
        train_with_parameter_servers(model, lambda context: None, steps=1)
    with pytest.raises(ValueError, match="steps must be a positive integer, got steps=0"):
        train_with_parameter_servers(model, lambda context: None, steps=0)
    with pytest.raises(ValueError, match="dataset_fn must be a callable"):
        train_with_parameter_servers(model, "data.csv", steps=1)


@pytest.mark.parametrize("name", ["SAM", "AdaHessian", "Sophia", "LBFGS", "Lookahead(SAM)"])
def test_train_with_parameter_servers_rejects_optimizers_that_need_a_closure(name):
    """Each step hands the optimizer gradients only: a method that needs the
    loss again on the same batch gets a clear error before any cluster work."""
    import keras

    from keras_optsuite.optimizers import LBFGS, SAM, AdaHessian, Lookahead, Sophia

    optimizer = {
        "SAM": lambda: SAM(keras.optimizers.SGD()), "AdaHessian": AdaHessian, "Sophia": Sophia,
        "LBFGS": LBFGS, "Lookahead(SAM)": lambda: Lookahead(SAM(keras.optimizers.SGD())),
    }[name]()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer, "mse")
    with pytest.raises(ValueError, match=r"cannot run \w+ .*needs a closure"):
        train_with_parameter_servers(model, lambda context: None, steps=1)


def test_the_methods_refused_on_sharded_variables_are_those_with_per_variable_statistics():
    """Found through wrappers and chains; elementwise methods and global sums pass."""
    import keras

    from keras_optsuite.distribute.parameter_server import _whole_variable_methods
    from keras_optsuite.optimizers import (
        AGC, LARS, SOAP, Chain, ClipByGlobalNorm, GradientCentralization, Lookahead, NovoGrad, Prodigy, RAdam,
        Ranger, Shampoo,
    )

    refused = {
        "Shampoo": Shampoo(), "SOAP": SOAP(), "LARS": LARS(), "NovoGrad": NovoGrad(),
        "Adafactor": keras.optimizers.Adafactor(), "Lamb": keras.optimizers.Lamb(), "Muon": keras.optimizers.Muon(),
        "GradientCentralization": Ranger(),
        "AGC": Lookahead(Chain("adam", [ClipByGlobalNorm(1.0), AGC()])),
        "GradientCentralization, Shampoo": Lookahead(Chain(Shampoo(), [GradientCentralization()])),
    }
    for expected, optimizer in refused.items():
        assert ", ".join(_whole_variable_methods(optimizer)) == expected
    for optimizer in (keras.optimizers.Adam(), RAdam(), Prodigy(), Lookahead(RAdam()),
                      Chain("adam", [ClipByGlobalNorm(1.0)])):
        assert _whole_variable_methods(optimizer) == []


def test_serve_returns_at_once_unless_this_task_is_a_worker_or_ps_of_a_ps_cluster(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert serve_if_worker_or_ps() is None
    cluster = {"chief": ["127.0.0.1:1"], "worker": ["127.0.0.1:2"], "ps": ["127.0.0.1:3"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    assert serve_if_worker_or_ps() is None
    no_ps = {"worker": ["127.0.0.1:2", "127.0.0.1:4"]}  # MultiWorkerMirrored: workers train themselves
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": no_ps, "task": {"type": "worker", "index": 1}}))
    assert serve_if_worker_or_ps() is None


def test_sharded_embedding_is_embedding_without_shards():
    import keras
    import tensorflow as tf

    ids = np.array([[0, 3, 7], [7, 1, 1]], dtype="int32")
    keras.utils.set_random_seed(3)
    layer = ShardedEmbedding(8, 5, name="table")
    plain = keras.layers.Embedding(8, 5)
    plain.build((None, 3))
    layer.build((None, 3))
    plain.set_weights(layer.get_weights())
    np.testing.assert_array_equal(layer(ids), plain(ids))
    np.testing.assert_array_equal(layer(ids.astype("float32")), plain(ids))
    assert [shard.shape for shard in variable_shards(layer.embeddings)] == [(8, 5)]
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is ShardedEmbedding and restored.get_config() == layer.get_config()
    halves = tf.__internal__.distribute.ShardedVariable(
        [tf.Variable(np.zeros((4, 5), "float32")), tf.Variable(np.ones((4, 5), "float32"))]
    )
    assert [shard.shape for shard in variable_shards(halves)] == [(4, 5), (4, 5)]
