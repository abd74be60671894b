"""Sending records to an MLflow store in order, telling permanent refusals from outages."""

from __future__ import annotations

import contextlib
import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

from keras_optsuite.callbacks._pending_runs import PendingRuns
from keras_optsuite.callbacks._records import (
    PROVISIONAL_RUN_ID_TAG,
    UNSENT_ARTIFACTS_DIRECTORY,
)
from keras_optsuite.callbacks._requests import plan_requests

_logger = logging.getLogger(__name__)

# Error codes that retrying cannot fix: the record is set aside. Everything
# else (connection errors, 5xx, RESOURCE_DOES_NOT_EXIST when pointed at the
# wrong store, auth) is treated as transient and stops the replay.
_PERMANENT_ERROR_CODES = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST"})


def _refused(message: str) -> Exception:
    """An error :func:`is_permanent_error` classifies as permanent (the record is set aside)."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def _real_run_id(run_id: str, runs: PendingRuns) -> str:
    real = runs.get(run_id)
    if real is None:
        raise _refused(
            f"run {run_id} was never created: its create_run record is missing or was refused"
        )
    return real


def _create_run(client: Any, record: dict, runs: PendingRuns) -> str:
    """Create the run of a ``create_run`` record once; return its real id.

    Idempotent across crashes and processes: under the map's lock, a known
    mapping wins; else a run of the experiment tagged with the pending id
    (created by a send that died before recording it) is adopted; only
    then is a run created.
    """
    from keras_optsuite.callbacks._store import get_or_create_experiment

    pending = record["run_id"]
    with runs.locked():
        real = runs.get(pending)
        if real is not None:
            return real
        tags = {**record["tags"], PROVISIONAL_RUN_ID_TAG: pending}
        parent = record.get("parent_run_id")
        if parent is not None:  # created (or refused) before this record: the journal keeps order
            parent = tags["mlflow.parentRunId"] = _real_run_id(parent, runs)
        if record["experiment"] is None:
            experiment_id = client.get_run(parent).info.experiment_id
        else:
            experiment = client.get_experiment_by_name(record["experiment"])
            if experiment is not None and experiment.lifecycle_stage != "active":
                raise _refused(
                    f"experiment {record['experiment']!r} is deleted: run {pending} cannot be created in it"
                )
            experiment_id = get_or_create_experiment(client, record["experiment"])
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PROVISIONAL_RUN_ID_TAG}` = '{pending}'",
            max_results=1,
        )
        if found:
            real = found[0].info.run_id
        else:
            run = client.create_run(
                experiment_id, start_time=record["start_time"], tags=tags, run_name=record["run_name"]
            )
            real = run.info.run_id
        runs.remember(pending, real)
    return real


def _upload_artifacts(client: Any, run_id: str, record: dict) -> None:
    """Upload a kept copy, then delete it; a copy that is gone was uploaded before a crash."""
    directory = Path(record["directory"])
    if not directory.is_dir():
        _logger.info("%s is gone: uploaded by an earlier replay", directory)
        return
    client.log_artifacts(run_id, str(directory), record["artifact_path"])
    shutil.rmtree(directory, ignore_errors=True)
    if directory.parent.parent.name == UNSENT_ARTIFACTS_DIRECTORY:
        with contextlib.suppress(OSError):
            directory.parent.rmdir()  # the run's folder, once its last copy is uploaded


def _log_inputs(client: Any, run_id: str, record: dict) -> None:
    from mlflow.entities import Dataset, DatasetInput, InputTag

    inputs = []
    for entry in record["datasets"]:
        dataset = Dataset(
            entry["name"], entry["digest"], entry["source_type"], entry["source"],
            entry["schema"], entry["profile"],
        )  # fmt: skip
        tags = [InputTag("mlflow.data.context", entry["context"])] if entry["context"] else []
        inputs.append(DatasetInput(dataset, tags=tags))
    client.log_inputs(run_id, datasets=inputs)


def _send_request(client: Any, records: Sequence[dict], runs: PendingRuns) -> None:
    """One store call for records planned together by :func:`plan_requests`.

    A pending run id (see :meth:`Sink.create_run`) is replaced by the real
    id ``runs`` knows for it.
    """
    first = records[0]
    kind = first["kind"]
    if kind == "create_run":
        _create_run(client, first, runs)
        return
    run_id = _real_run_id(first["run_id"], runs)
    if kind == "terminate":
        client.set_terminated(run_id, status=first["status"], end_time=first["end_time"])
        return
    if kind == "artifacts":
        _upload_artifacts(client, run_id, first)
        return
    if kind == "inputs":
        _log_inputs(client, run_id, first)
        return
    from mlflow.entities import Metric, Param, RunTag

    metrics: list[Metric] = []
    params: dict[str, str] = {}
    tags: dict[str, str] = {}
    for record in records:
        if record["kind"] == "metrics":
            metrics.extend(Metric(k, value, ts, step) for k, value, ts, step in record["metrics"])
        elif record["kind"] == "params":
            params.update(record["params"])
        else:
            tags.update(record["tags"])  # later values win, as sequential calls would
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(key, value) for key, value in params.items()],
        tags=[RunTag(key, value) for key, value in tags.items()],
        synchronous=True,  # never MLflow's async queue: its failures are only logged
    )


def is_permanent_error(error: BaseException) -> bool:
    """True if the store rejected the data itself (retrying cannot help)."""
    from mlflow.exceptions import MlflowException

    return isinstance(error, MlflowException) and error.error_code in _PERMANENT_ERROR_CODES


def send_in_order(
    client: Any,
    records: Sequence[dict],
    runs: PendingRuns,
    on_progress: Callable[[int, list[tuple[dict, str]]], None] | None = None,
) -> tuple[int, BaseException | None]:
    """Send ``records`` in order (pending run ids resolved by ``runs``); stop at the first transient failure.

    Returns ``(handled, error)``: the first ``handled`` records were sent or
    rejected for good; ``error`` is the transient failure that stopped the
    loop, or None. ``on_progress(handled, rejected)`` runs after each
    request with the records rejected by it (``(record, message)`` pairs).
    """
    handled = 0
    for start, end in plan_requests(records):
        rejected: list[tuple[dict, str]] = []
        try:
            _send_request(client, records[start:end], runs)
        except Exception as error:  # noqa: BLE001 - classified below
            if not is_permanent_error(error):
                return handled, error
            if end - start == 1:
                rejected.append((records[start], str(error)))
            else:
                # Find the culprit(s): resend this request's records one by one.
                for index in range(start, end):
                    try:
                        _send_request(client, records[index : index + 1], runs)
                    except Exception as single_error:  # noqa: BLE001
                        if not is_permanent_error(single_error):
                            if on_progress is not None and index > start:
                                on_progress(index, rejected)
                            return index, single_error
                        rejected.append((records[index], str(single_error)))
        handled = end
        if on_progress is not None:
            on_progress(handled, rejected)
    return handled, None
