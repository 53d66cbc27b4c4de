"""Engine rows → the camelCase JSON objects of the public API (Trigger.dev's shapes)."""

from __future__ import annotations

from typing import Any

import orjson

from worker.common.statuses import API_FINAL_STATUSES, API_STATUS


def _packet(data: str | None, data_type: str | None) -> Any:
    """Plain JSON is returned inline as JSON; other types as their serialised text."""
    if data is None:
        return None
    if data_type in (None, "application/json"):
        return orjson.loads(data)
    return data


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def present_run(row: dict[str, Any], *, full: bool = True) -> dict[str, Any]:
    status = API_STATUS[row["status"]]
    run: dict[str, Any] = {
        "id": row["id"],
        "status": status,
        "taskIdentifier": row["task_id"],
        "version": row.get("version_name"),
        "queue": row["queue"],
        "tags": row["tags"],
        "idempotencyKey": row["idempotency_key"],
        "isTest": row["is_test"],
        "attemptCount": row.get("attempt_count", row["attempt_number"]),
        "batchId": row["batch_id"],
        "parentRunId": row["parent_run_id"],
        "createdAt": _iso(row["created_at"]),
        "updatedAt": _iso(row["updated_at"]),
        "startedAt": _iso(row["started_at"]),
        "finishedAt": _iso(row["completed_at"]),
        "delayedUntil": _iso(row["run_at"]) if row["status"] == "DELAYED" else None,
        "isQueued": status in ("QUEUED", "PENDING_VERSION", "DELAYED"),
        "isExecuting": status in ("EXECUTING", "DEQUEUED"),
        "isWaiting": status == "WAITING",
        "isCompleted": status in API_FINAL_STATUSES,
        "isSuccess": status == "COMPLETED",
        "isFailed": status in API_FINAL_STATUSES and status not in ("COMPLETED", "CANCELED"),
        "isCanceled": status == "CANCELED",
        "metadata": row["metadata"],
    }
    if status == "PENDING_VERSION":  # why it waits, and for what (docs/run-states.md)
        run["statusReason"] = row.get("status_reason") or (
            f"no connected worker has task {row['task_id']!r} (or its queue "
            f"{row['queue']!r} is not declared yet)")
    if full:
        run.update(
            payload=_packet(row["payload"], row["payload_type"]),
            payloadType=row["payload_type"],
            output=_packet(row["output"], row["output_type"]),
            outputType=row["output_type"],
            error=row["error"],
        )
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
