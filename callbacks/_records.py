"""Tracking records: their kinds, their validation and their encoding as journal lines.

The record schema is described in ``_journal.py``; :func:`check_record`
validates a record and returns its normalized form (``ValueError`` naming
the bad field otherwise).
"""

from __future__ import annotations

import json
import os
from typing import Any

RECORD_KINDS = ("metrics", "params", "tags", "terminate", "create_run", "artifacts", "inputs")
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")
PENDING_RUN_PREFIX = "pending-"
"""Run ids starting with this name a run not created yet (see :meth:`Sink.create_run`)."""

PROVISIONAL_RUN_ID_TAG = "keras_optsuite.provisional_run_id"
"""The tag by which a run created from a ``create_run`` record is found again."""

UNSENT_ARTIFACTS_DIRECTORY = "unsent-artifacts"
"""Beside the journal: local copies of artifacts waiting for upload."""

_DATASET_FIELDS = ("name", "digest", "source_type", "source")
_OPTIONAL_DATASET_FIELDS = ("schema", "profile", "context")


def check_run_id(run_id: Any) -> str:
    if not isinstance(run_id, str) or not run_id:
        raise ValueError(f"run_id must be a non-empty string, got run_id={run_id!r}")
    return run_id


def check_string_mapping(name: str, mapping: Any) -> dict[str, str]:
    if not isinstance(mapping, dict) or not all(isinstance(k, str) for k in mapping):
        raise ValueError(f"{name} must be a dict with string keys, got {name}={mapping!r}")
    return {key: str(value) for key, value in mapping.items()}


def is_pending_run_id(run_id: Any) -> bool:
    """True for a run id made by :meth:`Sink.create_run` (the run may not exist yet)."""
    return isinstance(run_id, str) and run_id.startswith(PENDING_RUN_PREFIX)


def _check_optional_string(name: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{name} must be a string or None, got {name}={value!r}")
    return value


def _check_milliseconds(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0 (ms), got {name}={value!r}")
    return value


def _check_datasets(datasets: Any) -> list[dict[str, str | None]]:
    if not isinstance(datasets, list) or not datasets:
        raise ValueError(f"record['datasets'] must be a non-empty list, got {datasets!r}")
    normalized = []
    for dataset in datasets:
        if not isinstance(dataset, dict) or not all(
            isinstance(dataset.get(field), str) for field in _DATASET_FIELDS
        ):
            raise ValueError(
                f"record['datasets'] entries must be dicts with string {', '.join(_DATASET_FIELDS)}, "
                f"got {dataset!r}"
            )
        entry = {field: dataset[field] for field in _DATASET_FIELDS}
        for field in _OPTIONAL_DATASET_FIELDS:
            entry[field] = _check_optional_string(f"dataset {field}", dataset.get(field))
        normalized.append(entry)
    return normalized


def check_record(record: Any) -> dict:
    """Validate a journal record and return it normalized (floats, ints, strings)."""
    if not isinstance(record, dict) or record.get("kind") not in RECORD_KINDS:
        allowed = ", ".join(repr(kind) for kind in RECORD_KINDS)
        raise ValueError(f"record must be a dict with kind one of {allowed}, got record={record!r}")
    kind = record["kind"]
    run_id = check_run_id(record.get("run_id"))
    if kind == "metrics":
        metrics = record.get("metrics")
        if not isinstance(metrics, (list, tuple)):
            raise ValueError(f"record['metrics'] must be a list, got {metrics!r}")
        normalized = []
        for entry in metrics:
            if not isinstance(entry, (list, tuple)) or len(entry) != 4:
                raise ValueError(
                    "record['metrics'] entries must be [key, value, timestamp_ms, step], "
                    f"got {entry!r}"
                )
            key, value, timestamp, step = entry
            if not isinstance(key, str):
                raise ValueError(f"metric key must be a string, got {key!r}")
            normalized.append([key, float(value), int(timestamp), int(step)])
        return {"kind": kind, "run_id": run_id, "metrics": normalized}
    if kind in ("params", "tags"):
        return {"kind": kind, "run_id": run_id, kind: check_string_mapping(kind, record.get(kind))}
    if kind == "create_run":
        if not is_pending_run_id(run_id):
            raise ValueError(
                f"a create_run record's run_id must start with {PENDING_RUN_PREFIX!r}, got run_id={run_id!r}"
            )
        experiment = record.get("experiment")
        parent = record.get("parent_run_id")
        if parent is not None and (not isinstance(parent, str) or not parent):
            raise ValueError(f"parent_run_id must be a run id or None, got parent_run_id={parent!r}")
        if (experiment is not None or parent is None) and (not isinstance(experiment, str) or not experiment.strip()):
            raise ValueError(
                "experiment must be a non-empty string (or None for a child run, which goes to its "
                f"parent's experiment), got experiment={experiment!r}"
            )
        created = {
            "kind": kind,
            "run_id": run_id,
            "experiment": experiment,
            "run_name": _check_optional_string("run_name", record.get("run_name")),
            "tags": check_string_mapping("tags", record.get("tags", {})),
            "start_time": _check_milliseconds("start_time", record.get("start_time")),
        }
        if parent is not None:
            created["parent_run_id"] = parent
        return created
    if kind == "artifacts":
        directory = record.get("directory")
        if not isinstance(directory, str) or not os.path.isabs(directory):
            raise ValueError(f"directory must be an absolute path, got directory={directory!r}")
        artifact_path = _check_optional_string("artifact_path", record.get("artifact_path"))
        return {"kind": kind, "run_id": run_id, "directory": directory, "artifact_path": artifact_path}
    if kind == "inputs":
        return {"kind": kind, "run_id": run_id, "datasets": _check_datasets(record.get("datasets"))}
    status = record.get("status")
    if status not in TERMINAL_STATUSES:
        allowed = ", ".join(repr(s) for s in TERMINAL_STATUSES)
        raise ValueError(f"status must be one of {allowed}, got status={status!r}")
    end_time = _check_milliseconds("end_time", record.get("end_time"))
    return {"kind": kind, "run_id": run_id, "status": status, "end_time": end_time}


def encode_record(record: dict) -> bytes:
    # allow_nan: a NaN or infinite metric round-trips exactly (Python's json
    # reads its own NaN/Infinity tokens), which keeps replays idempotent.
    return (json.dumps(record, separators=(",", ":"), allow_nan=True) + "\n").encode("utf-8")
