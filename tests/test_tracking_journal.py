"""The journal and the asynchronous sink (callbacks/_journal.py) against real MLflow stores.

What must hold: records survive a torn write; a replay sends them in order
and never duplicates a metric step, even when it is repeated after a crash;
the sink never blocks its caller, spools during an outage and replays before
newer records; ``optsuite tracking replay`` sends what is left.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import mlflow
import pytest
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric

from keras_optsuite import cli
from keras_optsuite.callbacks import _requests, _store
from keras_optsuite.callbacks._journal import Journal
from keras_optsuite.callbacks._sink import Sink
from mlflow_server import free_port

pytestmark = pytest.mark.xdist_group("tracking_journal")  # one worker: one server per module

# Longest a Sink call may block its caller. Measured: ~0.1 ms typical, a few
# ms worst case on the shared 2-core machine (GIL handoff to the sender).
CALL_BOUND_SECONDS = 0.25
NOW_MS = 1_700_000_000_000


def metric_record(run_id, step, key="loss", value=None):
    value = 1.0 / (step + 1) if value is None else value
    return {"kind": "metrics", "run_id": run_id, "metrics": [[key, value, NOW_MS + step, step]]}


def new_run(client, name="journal"):
    experiment_id = _store.get_or_create_experiment(client, name)
    return client.create_run(experiment_id).info.run_id


def steps_of(client, run_id, key="loss"):
    history = client.get_metric_history(run_id, key)
    return sorted(m.step for m in history), history


@pytest.fixture(params=["embedded", "server"])
def client(request):
    """A client on the embedded SQLite store or on the real server (each test makes its own run)."""
    if request.param == "embedded":
        return mlflow.MlflowClient(request.getfixturevalue("shared_embedded_tracking_uri"))
    return mlflow.MlflowClient(request.getfixturevalue("mlflow_server").uri)


# -- records and the file format -----------------------------------------------


def test_records_are_validated_with_messages_naming_the_field(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    with pytest.raises(ValueError, match="kind"):
        journal.append({"kind": "artifact", "run_id": "r"})
    with pytest.raises(ValueError, match="run_id"):
        journal.append({"kind": "params", "run_id": "", "params": {}})
    with pytest.raises(ValueError, match="timestamp_ms"):
        journal.append({"kind": "metrics", "run_id": "r", "metrics": [["loss", 1.0]]})
    with pytest.raises(ValueError, match="status"):
        journal.append({"kind": "terminate", "run_id": "r", "status": "DONE", "end_time": 1})
    with pytest.raises(ValueError, match="end_time"):
        journal.append({"kind": "terminate", "run_id": "r", "status": "FAILED", "end_time": -1})
    assert journal.pending() == []


def test_append_round_trips_exactly_including_nan_and_infinity(tmp_path):
    journal = Journal(tmp_path / "sub" / "j.jsonl")
    values = [0.1, 1 / 3, float("nan"), float("inf"), -float("inf"), 1e-300]
    journal.append(
        {"kind": "metrics", "run_id": "r",
         "metrics": [["m", v, NOW_MS, i] for i, v in enumerate(values)]}
    )
    journal.append({"kind": "params", "run_id": "r", "params": {"lr": 0.5}})
    journal.append({"kind": "terminate", "run_id": "r", "status": "KILLED", "end_time": NOW_MS})
    metrics, params, terminate = journal.pending()
    read = [row[1] for row in metrics["metrics"]]
    assert read[:2] == values[:2] and read[3:] == values[3:]  # bit-exact floats
    assert math.isnan(read[2])
    assert params["params"] == {"lr": "0.5"}  # values become strings, like MLflow's
    assert terminate == {"kind": "terminate", "run_id": "r", "status": "KILLED", "end_time": NOW_MS}
    assert journal.path.read_bytes().count(b"\n") == 3  # one line per record


def test_a_torn_last_line_is_ignored_then_cut_before_the_next_append(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    for step in range(3):
        journal.append(metric_record("r", step))
    whole = journal.path.read_bytes()
    torn_line = json.dumps(metric_record("r", 3)).encode()[:25]  # a write cut by kill -9
    journal.path.write_bytes(whole + torn_line)

    assert [r["metrics"][0][3] for r in journal.pending()] == [0, 1, 2]
    journal.append(metric_record("r", 4))
    assert [r["metrics"][0][3] for r in journal.pending()] == [0, 1, 2, 4]
    appended = json.dumps(metric_record("r", 4), separators=(",", ":")) + "\n"
    assert journal.path.read_bytes() == whole + appended.encode()


@pytest.mark.slow
def test_journal_survives_kill_9_of_a_writing_process(tmp_path):
    """A real SIGKILL while a process appends as fast as it can: every line read back is whole."""
    path = tmp_path / "j.jsonl"
    ready = tmp_path / "ready"
    writer = textwrap.dedent(
        f"""
        import pathlib
        from keras_optsuite.callbacks._journal import Journal
        journal = Journal({str(path)!r})
        big = [["loss_%d" % i, 0.5, 1, 0] for i in range(300)]  # ~8 kB lines: tearable writes
        pathlib.Path({str(ready)!r}).touch()
        step = 0
        while True:
            last = [["step", float(step), 1, step]]
            journal.append({{"kind": "metrics", "run_id": "r", "metrics": big + last}})
            step += 1
        """
    )
    process = subprocess.Popen([sys.executable, "-c", writer])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    assert process.returncode == -signal.SIGKILL
    records = Journal(path).pending()
    steps = [int(r["metrics"][-1][1]) for r in records]
    assert len(steps) > 5
    assert steps == list(range(len(steps)))  # contiguous, nothing half-read
    Journal(path).append(metric_record("r", 0))  # appending after a crash works
    assert len(Journal(path).pending()) == len(steps) + 1


def test_plan_requests_respects_mlflow_batch_limits():
    records = (
        [{"kind": "metrics", "run_id": "a", "metrics": [["m", 0.0, 0, i] for i in range(600)]}] * 3
        + [{"kind": "params", "run_id": "a", "params": {f"p{i}": "v" for i in range(60)}}] * 1
        + [{"kind": "params", "run_id": "a", "params": {f"q{i}": "v" for i in range(60)}}] * 1
        + [{"kind": "tags", "run_id": "a", "tags": {"t": "1"}}]
        + [{"kind": "terminate", "run_id": "a", "status": "FINISHED", "end_time": 1}]
        + [{"kind": "tags", "run_id": "b", "tags": {"t": "1"}}]
        + [{"kind": "params", "run_id": "b", "params": {"same": "1"}}]
        + [{"kind": "params", "run_id": "b", "params": {"same": "2"}}]
    )
    plan = _requests.plan_requests(records)
    assert plan[0][0] == 0 and plan[-1][1] == len(records)
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))  # contiguous, in order
    for start, end in plan:
        chunk = records[start:end]
        counts = [sum(c) for c in zip(*(_requests.entity_counts(r) for r in chunk))]
        assert counts[0] <= 1000 and counts[1] <= 100 and counts[2] <= 100 and sum(counts) <= 1000
        assert len({r["run_id"] for r in chunk}) == 1
        assert all(r["kind"] != "terminate" for r in chunk) or len(chunk) == 1
    # a repeated param key never shares a request with its first value
    assert (9, 10) in plan


def test_run_creation_artifact_and_input_records_are_validated(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    create = {"kind": "create_run", "run_id": "pending-1", "experiment": "e", "run_name": None, "tags": {},
              "start_time": NOW_MS}
    with pytest.raises(ValueError, match="run_id must start with 'pending-'"):
        journal.append({**create, "run_id": "a" * 32})
    with pytest.raises(ValueError, match="experiment"):
        journal.append({**create, "experiment": ""})
    with pytest.raises(ValueError, match="start_time"):
        journal.append({**create, "start_time": 1.5})
    with pytest.raises(ValueError, match="directory must be an absolute path"):
        journal.append({"kind": "artifacts", "run_id": "r", "directory": "relative/dir", "artifact_path": None})
    with pytest.raises(ValueError, match="artifact_path"):
        journal.append({"kind": "artifacts", "run_id": "r", "directory": str(tmp_path), "artifact_path": 3})
    with pytest.raises(ValueError, match="datasets"):
        journal.append({"kind": "inputs", "run_id": "r", "datasets": [{"name": "training"}]})
    assert journal.pending() == []
    journal.append(create)
    assert journal.pending() == [create]


# -- replay against real stores ----------------------------------------------------


def build_journal(path, run_id, steps=range(20)):
    journal = Journal(path)
    params = {"learning_rate": "0.01", "seed": "7"}
    journal.append({"kind": "params", "run_id": run_id, "params": params})
    journal.append({"kind": "tags", "run_id": run_id, "tags": {"phase": "first"}})
    for step in steps:
        journal.append(metric_record(run_id, step))
    journal.append({"kind": "tags", "run_id": run_id, "tags": {"phase": "last"}})
    end = {"kind": "terminate", "run_id": run_id, "status": "FINISHED", "end_time": NOW_MS + 99}
    journal.append(end)
    return journal


def assert_run_complete(client, run_id, steps=range(20)):
    logged_steps, history = steps_of(client, run_id)
    assert logged_steps == list(steps)  # each step exactly once
    assert {m.step: m.value for m in history} == {s: 1.0 / (s + 1) for s in steps}
    run = client.get_run(run_id)
    assert run.data.params == {"learning_rate": "0.01", "seed": "7"}
    assert run.data.tags["phase"] == "last"  # tags applied in journal order
    assert run.info.status == "FINISHED" and run.info.end_time == NOW_MS + 99


def test_replay_sends_in_order_and_a_second_replay_sends_nothing(client, tmp_path):
    run_id = new_run(client)
    journal = build_journal(tmp_path / "j.jsonl", run_id)
    assert journal.replay(client) == (24, 0)
    assert_run_complete(client, run_id)
    assert journal.pending() == [] and journal.path.stat().st_size == 0  # emptied
    assert journal.replay(client) == (0, 0)
    assert_run_complete(client, run_id)
    assert journal.rejected() == []


def test_replay_after_a_crash_between_sending_and_recording_progress_is_idempotent(
    client, tmp_path
):
    """Everything was sent but the cursor never written: the whole journal goes again.

    MLflow's SQL store drops metrics whose (key, timestamp, step, value)
    exist, accepts params re-logged with the same value, overwrites tags
    (journal order again gives the last value) and re-terminating sets the
    same status and end time.
    """
    run_id = new_run(client)
    journal = build_journal(tmp_path / "j.jsonl", run_id)
    before_crash = tmp_path / "journal-before-crash"
    shutil.copy(journal.path, before_crash)
    assert journal.replay(client) == (24, 0)

    shutil.copy(before_crash, journal.path)  # as if the process died before the cursor write
    journal.cursor_path.unlink(missing_ok=True)
    assert len(journal.pending()) == 24
    assert journal.replay(client) == (24, 0)
    assert_run_complete(client, run_id)
    assert journal.rejected() == []


def test_partial_replay_resumes_from_the_cursor(client, tmp_path):
    """A record the store cannot take yet (unknown run: wrong store) stops the replay."""
    run_id = new_run(client)
    journal = Journal(tmp_path / "j.jsonl")
    for step in range(5):
        journal.append(metric_record(run_id, step))
    journal.append(metric_record("f" * 32, 0))  # a run this store does not have
    for step in range(5, 8):
        journal.append(metric_record(run_id, step))

    assert journal.replay(client) == (5, 4)
    assert steps_of(client, run_id)[0] == [0, 1, 2, 3, 4]
    pending = journal.pending()
    assert [r["run_id"] for r in pending] == ["f" * 32] + [run_id] * 3
    assert journal.replay(client) == (0, 4)  # still blocked, nothing resent
    assert json.loads(journal.cursor_path.read_text())["offset"] > 0
    assert journal.rejected() == []  # unknown run is not a permanent refusal


def test_records_the_store_refuses_are_set_aside_and_do_not_block_the_rest(client, tmp_path):
    run_id = new_run(client)
    journal = Journal(tmp_path / "j.jsonl")
    journal.append({"kind": "params", "run_id": run_id, "params": {"optimizer": "adam"}})
    journal.append(metric_record(run_id, 0))
    journal.append({"kind": "params", "run_id": run_id, "params": {"optimizer": "sgd"}})  # changed
    journal.append(metric_record(run_id, 1))
    assert journal.replay(client) == (3, 0)
    assert client.get_run(run_id).data.params == {"optimizer": "adam"}
    assert steps_of(client, run_id)[0] == [0, 1]
    (rejected,) = journal.rejected()
    assert rejected["record"]["params"] == {"optimizer": "sgd"}
    assert "Changing param values is not allowed" in rejected["error"]


def test_large_records_are_split_within_limits(tmp_path, shared_embedded_tracking_uri):
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    run_id = new_run(client)
    journal = Journal(tmp_path / "j.jsonl")
    for start in range(0, 2500, 500):
        journal.append(
            {"kind": "metrics", "run_id": run_id,
             "metrics": [["m", float(s), NOW_MS + s, s] for s in range(start, start + 500)]}
        )  # fmt: skip
    for block in range(3):
        journal.append(
            {"kind": "params", "run_id": run_id,
             "params": {f"p{block}_{i}": str(i) for i in range(90)}}
        )  # fmt: skip
    assert journal.replay(client) == (8, 0)
    assert steps_of(client, run_id, "m")[0] == list(range(2500))
    assert len(client.get_run(run_id).data.params) == 270
    assert journal.rejected() == []


def test_replay_to_a_stopped_server_fails_fast_and_keeps_everything(tmp_path):
    journal = Journal(tmp_path / "j.jsonl")
    for step in range(3):
        journal.append(metric_record("r" * 32, step))
    started = time.monotonic()
    assert journal.replay(mlflow.MlflowClient(f"http://127.0.0.1:{free_port()}")) == (0, 3)
    assert time.monotonic() - started < 2.0  # MLflow's default retries: ~4 minutes
    assert len(journal.pending()) == 3


# -- runs started while the store was unreachable -------------------------------------


def kept_artifacts(journal, run_id):
    directory = journal.new_artifacts_directory(run_id)
    (directory / "model").mkdir()
    (directory / "model" / "final.keras").write_bytes(b"weights")
    (directory / "history.csv").write_text("epoch,loss\n0,0.5\n")
    return directory


def offline_run_journal(path, experiment):
    """What a job started with the store down leaves: its run's creation first, then its records."""
    journal = Journal(path)
    pending = "pending-" + uuid.uuid4().hex
    directory = kept_artifacts(journal, pending)
    journal.append({"kind": "create_run", "run_id": pending, "experiment": experiment, "run_name": "offline",
                    "tags": {"team": "a"}, "start_time": NOW_MS})
    journal.append({"kind": "params", "run_id": pending, "params": {"learning_rate": "0.01", "seed": "7"}})
    journal.append({"kind": "tags", "run_id": pending, "tags": {"phase": "first"}})
    for step in range(20):
        journal.append(metric_record(pending, step))
    journal.append({"kind": "tags", "run_id": pending, "tags": {"phase": "last"}})
    journal.append({"kind": "artifacts", "run_id": pending, "directory": str(directory), "artifact_path": None})
    journal.append({"kind": "terminate", "run_id": pending, "status": "FINISHED", "end_time": NOW_MS + 99})
    return journal, pending, directory


class CrashRightAfterCreatingTheRun(mlflow.MlflowClient):
    """A real client; the process "dies" once the store has created the run, before anything is recorded."""

    def create_run(self, *args, **kwargs):
        super().create_run(*args, **kwargs)
        raise ConnectionError("killed right after create_run")


def test_a_run_started_offline_is_created_once_even_when_replays_crash(client, tmp_path):
    experiment = "offline-" + uuid.uuid4().hex[:8]
    journal, pending, directory = offline_run_journal(tmp_path / "j.jsonl", experiment)
    before_crash = tmp_path / "journal-before-crash"
    shutil.copy(journal.path, before_crash)

    # The run is created, then the replay dies: neither the real id nor the cursor is recorded.
    assert journal.replay(CrashRightAfterCreatingTheRun(client.tracking_uri)) == (0, 26)
    assert journal.runs.get(pending) is None
    assert journal.replay(client) == (26, 0)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (run,) = client.search_runs([experiment_id])
    assert journal.runs.get(pending) == run.info.run_id != pending
    assert run.info.start_time == NOW_MS and run.info.run_name == "offline" and run.data.tags["team"] == "a"
    assert_run_complete(client, run.info.run_id)
    assert sorted(a.path for a in client.list_artifacts(run.info.run_id)) == ["history.csv", "model"]
    assert not directory.exists() and not directory.parent.exists(), "the uploaded copy is deleted"

    # Everything sent, but the cursor and the real id were lost: replaying all again changes nothing.
    shutil.copy(before_crash, journal.path)
    journal.cursor_path.unlink(missing_ok=True)
    journal.runs.path.unlink()
    assert Journal(journal.path).replay(client) == (26, 0)
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run.info.run_id]
    assert_run_complete(client, run.info.run_id)
    assert journal.rejected() == []


def test_records_of_a_pending_run_never_created_are_set_aside(tmp_path, shared_embedded_tracking_uri):
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    run_id = new_run(client)
    journal = Journal(tmp_path / "j.jsonl")
    journal.append(metric_record("pending-" + uuid.uuid4().hex, 0))  # its create_run was lost
    journal.append(metric_record(run_id, 0))
    assert journal.replay(client) == (1, 0)
    assert steps_of(client, run_id)[0] == [0]
    (rejected,) = journal.rejected()
    assert "was never created" in rejected["error"]


def test_sink_sends_a_run_created_offline_its_inputs_and_artifacts(tmp_path, shared_embedded_tracking_uri):
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    journal = Journal(tmp_path / "j.jsonl")
    experiment = "sink-offline-" + uuid.uuid4().hex[:8]
    with Sink(client, journal, flush_timeout=30) as sink:
        pending = sink.create_run(experiment, tags={"team": "b"}, start_time=NOW_MS)
        assert pending.startswith("pending-")
        sink.log_params(pending, {"seed": "7"})
        dataset = Dataset("training", "d1g35t", "code", "{}", None, '{"shape": [4, 2]}')
        sink.log_inputs(pending, [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "training")])])
        directory = kept_artifacts(journal, pending)
        sink.log_artifacts(pending, directory)
        sink.terminate(pending, "FINISHED", end_time=NOW_MS + 5)
        assert sink.flush() == 0
        real = sink.resolve_run_id(pending)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert real == run.info.run_id
    assert run.data.params == {"seed": "7"} and run.info.status == "FINISHED"
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == "d1g35t" and dataset_input.tags[0].value == "training"
    assert sorted(a.path for a in client.list_artifacts(real)) == ["history.csv", "model"]
    assert not directory.exists()
    assert sink.resolve_run_id(real) == real


# -- the sink ---------------------------------------------------------------------------


def timed(calls):
    """Run ``calls`` (zero-argument callables); return the longest single call in seconds."""
    longest = 0.0
    for call in calls:
        started = time.perf_counter()
        call()
        longest = max(longest, time.perf_counter() - started)
    return longest


def test_sink_delivers_everything_in_order_to_the_embedded_store(
    tmp_path, shared_embedded_tracking_uri
):
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    run_id = new_run(client)
    journal = Journal(_store.default_journal_path(shared_embedded_tracking_uri, tmp_path))
    sink = Sink(client, journal, flush_timeout=30)
    sink.log_params(run_id, {f"p{i}": i for i in range(150)})  # > 100: two requests
    longest = timed(
        [
            lambda s=s: sink.log_metrics(run_id, [Metric("loss", 1.0 / (s + 1), NOW_MS + s, s)])
            for s in range(200)
        ]
        + [lambda s=s: sink.set_tags(run_id, {"last_step": str(s)}) for s in range(200)]
    )
    sink.log_metrics(run_id, [Metric("wide", float(i), NOW_MS, i) for i in range(2500)])  # > 1000
    sink.terminate(run_id, "FINISHED", end_time=NOW_MS + 500)
    assert sink.flush() == 0
    assert sink.close() == 0

    assert longest < CALL_BOUND_SECONDS
    assert steps_of(client, run_id)[0] == list(range(200))
    assert steps_of(client, run_id, "wide")[0] == list(range(2500))
    run = client.get_run(run_id)
    assert len(run.data.params) == 150 and run.data.params["p149"] == "149"
    assert run.data.tags["last_step"] == "199"
    assert run.info.status == "FINISHED" and run.info.end_time == NOW_MS + 500
    assert not journal.path.exists() or journal.pending() == []  # the happy path never spools


class CountingClient(mlflow.MlflowClient):
    """Counts ``log_batch`` calls (one store transaction each)."""

    batches = 0

    def log_batch(self, *args, **kwargs):
        type(self).batches += 1
        return super().log_batch(*args, **kwargs)


def test_with_a_send_interval_records_wait_for_each_other_and_flush_sends_at_once(
    tmp_path, shared_embedded_tracking_uri
):
    client = CountingClient(shared_embedded_tracking_uri)
    run_id = new_run(client)
    journal = Journal(_store.default_journal_path(shared_embedded_tracking_uri, tmp_path))
    with Sink(client, journal, flush_timeout=30, send_interval=60.0) as sink:
        assert sink.flush() == 0  # the leftover-journal check at the start
        CountingClient.batches = 0
        for step in range(20):  # queued within far less than the interval
            sink.log_metrics(run_id, [Metric("loss", 1.0, NOW_MS + step, step)])
        time.sleep(0.5)
        assert steps_of(client, run_id)[0] == [], "nothing sent before the interval"
        started = time.monotonic()
        assert sink.flush() == 0
        assert time.monotonic() - started < 10, "flush does not wait for the interval"
        assert CountingClient.batches == 1, "one log_batch for all twenty"
        assert steps_of(client, run_id)[0] == list(range(20))
    with pytest.raises(ValueError, match="send_interval"):
        Sink(client, journal, send_interval=-1.0)


def test_sink_replays_a_leftover_journal_before_new_records(tmp_path, shared_embedded_tracking_uri):
    """A previous process died with records in the journal: they go first."""
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    run_id = new_run(client)
    journal = Journal(tmp_path / "j.jsonl")
    for step in range(10):
        journal.append(metric_record(run_id, step))
        journal.append({"kind": "tags", "run_id": run_id, "tags": {"last_step": str(step)}})
    with Sink(client, journal) as sink:
        for step in range(10, 20):
            sink.log_metrics(run_id, [Metric("loss", 1.0 / (step + 1), NOW_MS + step, step)])
            sink.set_tags(run_id, {"last_step": str(step)})
        assert sink.flush() == 0
    assert steps_of(client, run_id)[0] == list(range(20))
    assert client.get_run(run_id).data.tags["last_step"] == "19"
    assert journal.pending() == []


@pytest.mark.slow
def test_sink_survives_a_server_outage_without_losing_or_duplicating_steps(mlflow_server, tmp_path):
    """300 steps; the server is down for steps 100-199 and comes back.

    Every step is present exactly once, the journal was used during the
    outage, the calls never blocked, and the outage's records were replayed
    before the newer ones (the ``last_step`` tag, overwritten at each step,
    ends at 299).
    """
    client = mlflow.MlflowClient(mlflow_server.uri)
    run_id = new_run(client, "outage")
    journal = Journal(_store.default_journal_path(mlflow_server.uri, tmp_path))
    sink = Sink(client, journal, flush_timeout=30, retry_delay=0.2, max_retry_delay=1.0)

    def log(step):
        sink.log_metrics(run_id, [Metric("loss", 1.0 / (step + 1), NOW_MS + step, step)])
        sink.set_tags(run_id, {"last_step": str(step)})
        time.sleep(0.002)

    longest = timed([lambda s=s: log(s) for s in range(100)])
    try:
        mlflow_server.stop()
        longest = max(longest, timed([lambda s=s: log(s) for s in range(100, 200)]))
        deadline = time.monotonic() + 10
        while journal.pending_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        spooled = journal.pending_count()
        assert spooled > 0, "the outage never reached the journal"
    finally:
        mlflow_server.start()
    longest = max(longest, timed([lambda s=s: log(s) for s in range(200, 300)]))
    assert sink.flush() == 0
    assert sink.close() == 0

    logged_steps, history = steps_of(client, run_id)
    assert logged_steps == list(range(300))
    by_step = sorted(history, key=lambda m: m.step)
    assert [m.timestamp for m in by_step] == [NOW_MS + s for s in range(300)]
    assert client.get_run(run_id).data.tags["last_step"] == "299"
    assert journal.pending() == []
    # time.sleep(0.002) is inside each timed call
    assert longest < CALL_BOUND_SECONDS, f"a call blocked {longest:.3f} s"


@pytest.mark.slow
def test_flush_with_the_server_down_returns_in_time_and_the_cli_replays_later(
    mlflow_server, tmp_path, capsys
):
    client = mlflow.MlflowClient(mlflow_server.uri)
    run_id = new_run(client, "flush-down")
    journal = Journal(_store.default_journal_path(mlflow_server.uri, tmp_path / "mlruns"))
    try:
        mlflow_server.stop()
        sink = Sink(client, journal, flush_timeout=5)
        for step in range(30):
            sink.log_metrics(run_id, [Metric("loss", 1.0 / (step + 1), NOW_MS + step, step)])
        sink.terminate(run_id, "KILLED", end_time=NOW_MS + 30)
        started = time.monotonic()
        unsent = sink.flush(timeout=3)
        flush_seconds = time.monotonic() - started
        started = time.monotonic()
        assert sink.close(timeout=3) == 31
        close_seconds = time.monotonic() - started
        assert unsent == 31 and len(journal.pending()) == 31
        assert flush_seconds < 3.5 and close_seconds < 4.0

        # The command with the server still down: nothing sent, exit status 1.
        arguments = ["tracking", "replay", "--journal", str(journal.path)]
        arguments += ["--tracking-uri", mlflow_server.uri]
        assert cli.main(arguments) == 1
        assert "sent 0 records" in capsys.readouterr().out
    finally:
        mlflow_server.start()

    assert cli.main(arguments) == 0
    output = capsys.readouterr().out
    assert f"sent 31 records to {mlflow_server.uri}; 0 remain" in output
    assert steps_of(client, run_id)[0] == list(range(30))
    assert client.get_run(run_id).info.status == "KILLED"
    assert journal.pending() == []


def test_cli_replay_defaults_to_the_journal_of_the_tracking_uri(embedded_tracking_uri, capsys):
    """``optsuite tracking replay`` alone: ./mlruns (no MLFLOW_TRACKING_URI) and its journal."""
    client = mlflow.MlflowClient(embedded_tracking_uri)
    run_id = new_run(client)
    journal = Journal(_store.default_journal_path(embedded_tracking_uri))
    for step in range(4):
        journal.append(metric_record(run_id, step))
    assert cli.main(["tracking", "replay"]) == 0
    assert "sent 4 records" in capsys.readouterr().out
    assert steps_of(client, run_id)[0] == [0, 1, 2, 3]


def test_cli_replays_every_journal_of_a_directory(tmp_path, shared_embedded_tracking_uri, capsys):
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    run_ids = [new_run(client), new_run(client)]
    for index, run_id in enumerate(run_ids):
        journal = Journal(tmp_path / "journals" / f"{run_id}.jsonl")
        for step in range(index + 2):
            journal.append(metric_record(run_id, step))
    arguments = ["tracking", "replay", "--journal", str(tmp_path / "journals")]
    assert cli.main([*arguments, "--tracking-uri", shared_embedded_tracking_uri]) == 0
    output = capsys.readouterr().out
    assert "sent 2 records" in output and "sent 3 records" in output
    assert [steps_of(client, run_id)[0] for run_id in run_ids] == [[0, 1], [0, 1, 2]]


def test_an_unreadable_line_is_set_aside_and_replay_goes_on(tmp_path, shared_embedded_tracking_uri):
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    run_id = new_run(client)
    journal = Journal(tmp_path / "j.jsonl")
    journal.append(metric_record(run_id, 0))
    with open(journal.path, "ab") as handle:
        handle.write(b'{"kind": "metrics", garbage\n')  # complete but corrupted
    journal.append(metric_record(run_id, 1))
    assert len(journal.pending()) == 2
    assert journal.replay(client) == (2, 0)
    assert steps_of(client, run_id)[0] == [0, 1]
    (rejected,) = journal.rejected()
    assert "garbage" in rejected["record"] and rejected["error"] == "unreadable journal line"


def test_flush_and_close_are_bounded_when_the_server_hangs(tmp_path):
    """A server that accepts connections but never answers: flush returns at its timeout."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)  # never accept(): requests sit in the backlog
        uri = "http://127.0.0.1:%d" % listener.getsockname()[1]
        journal = Journal(tmp_path / "j.jsonl")
        journal.append(metric_record("r" * 32, 0))
        sink = Sink(mlflow.MlflowClient(uri), journal)
        sink.log_metrics("r" * 32, [Metric("loss", 0.5, NOW_MS + 1, 1)])
        started = time.monotonic()
        assert sink.flush(timeout=1.0) == 2
        assert time.monotonic() - started < 1.5
        started = time.monotonic()
        assert sink.close(timeout=0.5) == 2
        assert time.monotonic() - started < 1.5
        assert [r["metrics"][0][3] for r in journal.pending()] == [0, 1]
        sink.log_metrics("r" * 32, [Metric("loss", 0.25, NOW_MS + 2, 2)])  # after close: journal
        assert len(journal.pending()) == 3


def test_sink_calls_are_thread_safe_and_keep_each_run_in_order(
    tmp_path, shared_embedded_tracking_uri
):
    client = mlflow.MlflowClient(shared_embedded_tracking_uri)
    run_ids = [new_run(client) for _ in range(3)]
    sink = Sink(client, Journal(tmp_path / "j.jsonl"), flush_timeout=30)

    def worker(run_id):
        for step in range(100):
            sink.log_metrics(run_id, [Metric("loss", float(step), NOW_MS + step, step)])
            sink.set_tags(run_id, {"last_step": str(step)})

    threads = [threading.Thread(target=worker, args=(run_id,)) for run_id in run_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sink.close() == 0
    for run_id in run_ids:
        assert steps_of(client, run_id)[0] == list(range(100))
        assert client.get_run(run_id).data.tags["last_step"] == "99"
