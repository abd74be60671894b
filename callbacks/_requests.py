"""Request planning: which consecutive records share one MLflow ``log_batch``."""

from __future__ import annotations

from typing import Sequence

# Kinds sent alone, one store call each (everything else shares a log_batch).
_SINGLE_REQUEST_KINDS = frozenset({"terminate", "create_run", "artifacts", "inputs"})

# MLflow's log_batch limits (mlflow.utils.validation) and a request-size margin
# under its 1 MB limit on the JSON body.
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
MAX_TAGS_PER_BATCH = 100
MAX_ENTITIES_PER_BATCH = 1000
MAX_BATCH_TEXT_BYTES = 400_000


def _text_size(record: dict) -> int:
    kind = record["kind"]
    if kind == "metrics":
        return sum(len(key) + 40 for key, _, _, _ in record["metrics"])
    if kind in ("params", "tags"):
        return sum(len(key) + len(value) + 20 for key, value in record[kind].items())
    return 50


def entity_counts(record: dict) -> tuple[int, int, int]:
    kind = record["kind"]
    return (
        len(record["metrics"]) if kind == "metrics" else 0,
        len(record["params"]) if kind == "params" else 0,
        len(record["tags"]) if kind == "tags" else 0,
    )


def plan_requests(records: Sequence[dict]) -> list[tuple[int, int]]:
    """Split ``records`` into ``[start, end)`` ranges, each one store request.

    Consecutive metrics/params/tags records of the same run share one
    ``log_batch`` within MLflow's limits; terminate, create_run, artifacts
    and inputs records are alone. A
    params record whose keys repeat a key already in the batch starts a new
    one, so a changed param fails alone instead of sinking its neighbours.
    """
    requests: list[tuple[int, int]] = []
    start = 0
    while start < len(records):
        if records[start]["kind"] in _SINGLE_REQUEST_KINDS:
            requests.append((start, start + 1))
            start += 1
            continue
        run_id = records[start]["run_id"]
        metrics = params = tags = size = 0
        param_keys: set[str] = set()
        end = start
        while end < len(records):
            record = records[end]
            if record["kind"] in _SINGLE_REQUEST_KINDS or record["run_id"] != run_id:
                break
            m, p, t = entity_counts(record)
            record_size = _text_size(record)
            keys = set(record["params"]) if record["kind"] == "params" else set()
            if end > start and (
                metrics + m > MAX_METRICS_PER_BATCH
                or params + p > MAX_PARAMS_PER_BATCH
                or tags + t > MAX_TAGS_PER_BATCH
                or metrics + m + params + p + tags + t > MAX_ENTITIES_PER_BATCH
                or size + record_size > MAX_BATCH_TEXT_BYTES
                or keys & param_keys
            ):
                break
            metrics, params, tags, size = metrics + m, params + p, tags + t, size + record_size
            param_keys |= keys
            end += 1
        requests.append((start, end))
        start = end
    return requests
