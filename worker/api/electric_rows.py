"""Runs as rows of Trigger.dev's ``TaskRun`` table, the way ElectricSQL's shape protocol sends
them to Trigger.dev's SDK (``SubscribeRunRawShape`` in ``@trigger.dev/core``).

Electric sends every value as Postgres text and describes the columns in the
``electric-schema`` header; the client parses by type (``int4``, ``bool``, ``jsonb``, arrays of
``text`` as ``{"a","b"}``). Timestamps are ``timestamp without time zone`` in UTC (the SDK adds
the ``Z``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from worker.api.presenters import duration_ms
from worker.common.serialization import JSON
from worker.common.statuses import FINAL_STATUSES
from worker.engine.db import Row

RELATION = ["public", "TaskRun"]

SCHEMA: dict[str, dict[str, Any]] = {
    "id": {"type": "text", "pk_index": 0, "not_null": True},
    "taskIdentifier": {"type": "text", "not_null": True},
    "friendlyId": {"type": "text", "not_null": True},
    "status": {"type": "text", "not_null": True},
    "createdAt": {"type": "timestamp", "not_null": True},
    "updatedAt": {"type": "timestamp", "not_null": True},
    "startedAt": {"type": "timestamp"},
    "delayUntil": {"type": "timestamp"},
    "queuedAt": {"type": "timestamp"},
    "expiredAt": {"type": "timestamp"},
    "completedAt": {"type": "timestamp"},
    "idempotencyKey": {"type": "text"},
    "number": {"type": "int4", "not_null": True},
    "isTest": {"type": "bool", "not_null": True},
    "usageDurationMs": {"type": "int4", "not_null": True},
    "costInCents": {"type": "float8", "not_null": True},
    "baseCostInCents": {"type": "float8", "not_null": True},
    "ttl": {"type": "text"},
    "payload": {"type": "text"},
    "payloadType": {"type": "text"},
    "metadata": {"type": "text"},
    "metadataType": {"type": "text"},
    "output": {"type": "text"},
    "outputType": {"type": "text"},
    "runTags": {"type": "text", "dims": 1},
    "error": {"type": "jsonb"},
    "realtimeStreams": {"type": "text", "dims": 1},
}
SCHEMA_HEADER = orjson.dumps(SCHEMA).decode()


def _ts(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _text_array(values: list[str]) -> str:
    quoted = ('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values)
    return "{" + ",".join(quoted) + "}"


def _error(error: dict[str, Any] | None) -> str | None:
    """Our TaskRunError as a ``BUILT_IN_ERROR`` the SDK's union always accepts."""
    if not error:
        return None
    message = error.get("message") or error.get("raw") or error.get("code") or "error"
    name = error.get("name") or error.get("code") or error.get("type") or "Error"
    stack = error.get("stackTrace") or error.get("stack_trace") or ""
    return orjson.dumps(
        {"type": "BUILT_IN_ERROR", "name": str(name), "message": str(message), "stackTrace": stack}
    ).decode()


def key_of(run_id: str) -> str:
    return f'"public"."TaskRun"/"{run_id}"'


def task_run_row(row: Row, streams: list[str] | None = None) -> dict[str, object]:
    """One run as a ``TaskRun`` row, every value as Electric's text form."""
    final = row["status"] in FINAL_STATUSES
    return {
        "id": row["id"],
        "taskIdentifier": row["task_id"],
        "friendlyId": row["id"],
        "status": row["status"],
        "createdAt": _ts(row["created_at"]),
        "updatedAt": _ts(row["updated_at"]),
        "startedAt": _ts(row["started_at"]),
        "delayUntil": _ts(row["run_at"]) if row["status"] == "DELAYED" else None,
        "queuedAt": _ts(row["created_at"]),
        "expiredAt": _ts(row["completed_at"]) if row["status"] == "EXPIRED" else None,
        "completedAt": _ts(row["completed_at"]) if final else None,
        "idempotencyKey": row["idempotency_key"],
        "number": str(row["attempt_number"]),
        "isTest": "true" if row["is_test"] else "false",
        "usageDurationMs": str(duration_ms(row)),
        "costInCents": "0",
        "baseCostInCents": "0",
        "ttl": None,
        "payload": row["payload"],
        "payloadType": row["payload_type"],
        "metadata": orjson.dumps(row["metadata"]).decode() if row["metadata"] is not None else None,
        "metadataType": JSON if row["metadata"] is not None else None,
        "output": row["output"] if final else None,
        "outputType": row["output_type"] if final else None,
        "runTags": _text_array(list(row["tags"] or [])),
        "error": _error(row["error"]) if final else None,
        "realtimeStreams": _text_array(streams or []),
    }


def change_message(row: Row, operation: str, offset: str) -> dict[str, object]:
    return {
        "key": key_of(row["id"]),
        "value": task_run_row(row),
        "headers": {"operation": operation, "relation": RELATION},
        "offset": offset,
    }


UP_TO_DATE: dict[str, object] = {"headers": {"control": "up-to-date"}}
MUST_REFETCH: dict[str, object] = {"headers": {"control": "must-refetch"}}
