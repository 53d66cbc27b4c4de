"""Engine rows → the camelCase JSON objects of the public API (Trigger.dev's shapes).

Run objects follow the zod schemas of Trigger.dev's SDK (``RetrieveRunResponse``,
``ListRunResponseItem`` in ``@trigger.dev/core``): optional fields are *absent* rather than
``null``, ``payload``/``output`` are decoded to JSON the way Trigger.dev's server does (a
SuperJSON packet becomes its ``json`` part, so a date is its ISO text), and ``isCancelled`` is
spelled the SDK's way. For our Python SDK, which wants the typed value back, a packet that is
not plain JSON is also given whole as ``rawPayload``/``rawOutput`` beside
``payloadType``/``outputType`` (docs/api.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from worker.common.serialization import JSON, SUPER_JSON
from worker.common.statuses import API_FINAL_STATUSES, API_STATUS
from worker.engine.db import Row

FAILED = frozenset({"FAILED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"})


def decode_packet(data: str | None, data_type: str | None) -> Any:
    """A stored packet as Trigger.dev's API shows it: JSON decoded, SuperJSON reduced to its
    plain-JSON part, text as the string."""
    if data is None:
        return None
    if data_type in (None, "", JSON):
        try:
            return _renderable(orjson.loads(data), data)
        except orjson.JSONDecodeError:  # stored before outputs were checked: as its text
            return data
    if data_type == SUPER_JSON:
        try:
            envelope = orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
        return _renderable(envelope.get("json") if isinstance(envelope, dict) else envelope, data)
    return data


def _renderable(value: Any, fallback: Any = None) -> Any:
    """``value`` if it can be rendered in a response, else ``fallback``: JSON stored before the
    limits of worker.common.limits must not make a run unreadable."""
    if isinstance(value, dict | list):
        try:  # wrapped: a response nests it a few levels deeper (orjson stops at 254)
            orjson.dumps([[[[[[[[value]]]]]]]])
        except orjson.JSONEncodeError:
            return fallback
    return value


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ms(start: datetime | None, end: datetime | None) -> int:
    if start is None:
        return 0
    return max(0, int(((end or datetime.now(UTC)) - start).total_seconds() * 1000))


def duration_ms(row: Row) -> int:
    """Time spent executing: the sum of the attempts' durations when they are known."""
    attempts = row.get("attempts")
    if attempts:
        return sum(_ms(a["started_at"], a["completed_at"]) for a in attempts)
    return _ms(row.get("started_at"), row.get("completed_at"))


def public_error(error: dict[str, Any] | None) -> dict[str, Any] | None:
    """Our TaskRunError as the SDK's ``SerializedError`` (message required; no nulls)."""
    if not error:
        return None
    out = {k: v for k, v in error.items() if v is not None}
    if not isinstance(out.get("message"), str):
        out["message"] = str(out.get("raw") or out.get("code") or out.get("type") or "error")
    return out


def _set(run: Row, key: str, value: Any) -> None:
    """Optional fields are left out rather than sent as null (the SDK's schemas want that)."""
    if value is not None:
        run[key] = value


def present_run(row: Row, *, full: bool = True) -> dict[str, object]:
    status = API_STATUS[row["status"]]
    final = status in API_FINAL_STATUSES
    run: Row = {
        "id": row["id"],
        "status": status,
        "taskIdentifier": row["task_id"],
        "queue": row["queue"],
        "tags": row["tags"] or [],
        "isTest": row["is_test"],
        "attemptCount": row.get("attempt_count", row["attempt_number"]),
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "isQueued": status in ("QUEUED", "PENDING_VERSION", "DELAYED"),
        "isExecuting": status in ("EXECUTING", "DEQUEUED"),
        "isWaiting": status == "WAITING",
        "isCompleted": final,
        "isSuccess": status == "COMPLETED",
        "isFailed": status in FAILED,
        "isCancelled": status == "CANCELED",
        "isCanceled": status == "CANCELED",
        "costInCents": 0,
        "baseCostInCents": 0,
        "durationMs": duration_ms(row),
        "depth": row.get("depth", 0 if row.get("parent_run_id") is None else 1),
        "triggerFunction": "batchTrigger" if row.get("batch_id") else "trigger",
    }
    _set(run, "version", row.get("version_name"))
    _set(run, "idempotencyKey", row["idempotency_key"])
    _set(run, "batchId", row["batch_id"])
    _set(run, "parentRunId", row["parent_run_id"])
    _set(run, "startedAt", _iso(row["started_at"]))
    _set(run, "finishedAt", _iso(row["completed_at"]))
    if row["status"] == "DELAYED":
        _set(run, "delayedUntil", _iso(row.get("run_at")))
    if row["status"] == "EXPIRED":
        _set(run, "expiredAt", _iso(row["completed_at"]))
    _set(run, "metadata", _renderable(row["metadata"]))
    if status == "PENDING_VERSION":  # why it waits, and for what (docs/run-states.md)
        run["statusReason"] = row.get("status_reason") or (
            f"no connected worker has task {row['task_id']!r} (or its queue "
            f"{row['queue']!r} is not declared yet)")
    if full:
        run["relatedRuns"] = row.get("related_runs") or {}
        _set(run, "payload", decode_packet(row["payload"], row["payload_type"]))
        _set(run, "payloadType", row["payload_type"])
        _set(run, "output", decode_packet(row["output"], row["output_type"]))
        _set(run, "outputType", row["output_type"])
        if row["payload_type"] not in (None, JSON):
            _set(run, "rawPayload", row["payload"])
        if row["output_type"] not in (None, JSON):
            _set(run, "rawOutput", row["output"])
        _set(run, "error", public_error(row["error"]))
        if "attempts" in row:
            run["attempts"] = [
                {
                    "number": a["number"],
                    "status": a["status"],
                    "error": a["error"],
                    "startedAt": _iso(a["started_at"]),
                    "completedAt": _iso(a["completed_at"]),
                }
                for a in row["attempts"]
            ]
    return run


def present_list_item(row: Row, env_id: str, env_slug: str) -> dict[str, object]:
    """A run in ``GET /api/v1/runs``: the common fields plus the environment it ran in."""
    item = present_run(row, full=False)
    item["env"] = {"id": env_id, "name": env_slug}
    return item
