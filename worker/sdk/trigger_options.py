"""Trigger options: the snake_case keyword options of ``trigger`` & co. as the camelCase wire
object (docs/api.md, "Trigger options"), and batch items split into payload and options."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterable, Iterable, Mapping, Sequence
from typing import TypedDict

from worker.common.serialization import JSON, dumps
from worker.sdk.context import current_context
from worker.sdk.definitions import Queue
from worker.sdk.idempotency_keys import for_trigger
from worker.sdk.transport import JsonBody

Duration = str | int | float | dt.timedelta


class TriggerOptions(TypedDict, total=False):
    """The keyword options of ``trigger`` & co. (Trigger.dev's, in snake_case). None means
    "not given". In a batch, the idempotency key options are the batch's own; the others are
    defaults for each item."""

    idempotency_key: str | None
    idempotency_key_ttl: Duration | None
    #: ``"1h"``, seconds, a timedelta, or a datetime to run at
    delay: Duration | dt.datetime | None
    ttl: Duration | None
    tags: str | Sequence[str] | None
    priority: int | None
    queue: str | Queue | None
    concurrency_key: str | None
    max_attempts: int | None
    max_duration: int | float | None
    machine: str | None
    #: a JSON object
    metadata: Mapping[str, object] | None
    version: str | None
    lock_to_version: str | None
    #: ``{"key": ..., "delay": ..., "mode": ..., "max_delay": ...}``
    debounce: Mapping[str, object] | None


_OPTION_NAMES = {
    "idempotency_key": "idempotencyKey",
    "idempotency_key_ttl": "idempotencyKeyTTL",
    "delay": "delay",
    "ttl": "ttl",
    "tags": "tags",
    "priority": "priority",
    "queue": "queue",
    "concurrency_key": "concurrencyKey",
    "max_attempts": "maxAttempts",
    "max_duration": "maxDuration",
    "machine": "machine",
    "metadata": "metadata",
    "version": "lockToVersion",
    "lock_to_version": "lockToVersion",
    "debounce": "debounce",
}
#: options of the batch itself; every other option is a default for each item
BATCH_OPTIONS = frozenset({"idempotency_key", "idempotency_key_ttl"})


def _duration(value: object) -> object:
    """``"1h"`` stays; seconds and timedeltas become ``"<n>s"``; datetimes become ISO text."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{max(0, round(value.total_seconds()))}s"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{max(0, round(value))}s"
    return value


def _wire_value(name: str, value: object) -> object:
    if name in ("delay", "idempotency_key_ttl"):
        return _duration(value)
    if name == "ttl" and isinstance(value, dt.timedelta):
        return round(value.total_seconds())
    if name == "tags":
        return [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    if name == "queue" and isinstance(value, Queue):
        return value.name
    if name == "idempotency_key":
        return for_trigger(str(value))
    if name == "debounce" and isinstance(value, Mapping):
        return {"maxDelay" if k == "max_delay" else k: v for k, v in value.items()}
    if name == "metadata":
        _, data_type = dumps(value)
        if data_type != JSON or not isinstance(value, dict):
            raise TypeError("metadata must be a JSON object (str keys, JSON values)")
    return value


def wire_options(options: Mapping[str, object]) -> JsonBody:
    """snake_case trigger options -> the camelCase wire object (None values dropped)."""
    out: JsonBody = {}
    for name, value in options.items():
        wire = _OPTION_NAMES.get(name)
        if wire is None:
            raise TypeError(f"unknown trigger option {name!r}; allowed: {sorted(_OPTION_NAMES)}")
        if value is not None:
            out[wire] = _wire_value(name, value)
    return out


def with_parent(wire: JsonBody) -> JsonBody:
    """Inside a run, a triggered run is its child (canceling the parent cancels it too)."""
    ctx = current_context()
    if ctx is not None and "parentRunId" not in wire:
        wire["parentRunId"] = ctx.run.id
    return wire


def split_item(item: object) -> tuple[object, dict[str, object]]:
    """A batch item is a payload, or ``{"payload": ..., "options": {...}}`` (only those keys)."""
    if isinstance(item, dict) and "payload" in item and set(item) <= {"payload", "options"}:
        return item["payload"], dict(item.get("options") or {})
    return item, {}


async def collect_items(items: object) -> list[object]:
    """A batch's items as a list (Trigger.dev also takes AsyncIterables and streams)."""
    if isinstance(items, list):
        return items
    if isinstance(items, AsyncIterable):
        return [item async for item in items]
    if isinstance(items, str | bytes | dict) or not isinstance(items, Iterable):
        raise TypeError("batch items must be a list, an iterable or an async iterable")
    return list(items)
