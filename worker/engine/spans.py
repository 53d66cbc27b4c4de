"""Spans of runs: OTLP decoding with Trigger.dev's limits, storage in ``run_spans``, reading.

A span is filed under a run by its ``ctx.run.id`` attribute (set on every span an executor
starts during a run, worker/runtime/telemetry.py); spans naming no run, or a run of another
environment, are dropped. Limits (Trigger.dev's): at most 256 attributes per span, attribute
values cut at 131,072 characters, at most 10 events per span.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.common.limits import clean_json, clean_text
from worker.engine.db import Pool, one_trip
from worker.engine.keys import Environment
from worker.engine.queries import Q

MAX_ATTRIBUTES = 256
MAX_VALUE_CHARS = 131_072
MAX_EVENTS = 10
RUN_ID_ATTRIBUTE = "ctx.run.id"


@dataclass
class SpanRow:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    run_id: str
    name: str
    kind: int
    start_time: datetime
    end_time: datetime
    status_code: int
    status_message: str | None
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    scope: str | None = None

    def wire(self) -> dict[str, Any]:
        """The row as ``insert_spans`` reads it (orjson writes the datetimes as RFC 3339)."""
        return {"trace_id": self.trace_id, "span_id": self.span_id,
                "parent_span_id": self.parent_span_id, "run_id": self.run_id,
                "name": self.name, "kind": self.kind, "start_time": self.start_time,
                "end_time": self.end_time, "status_code": self.status_code,
                "status_message": self.status_message, "attributes": self.attributes,
                "events": self.events, "scope": self.scope}


def _any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as a JSON value (strings cut to the limit)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "string_value":
        return clean_text(value.string_value[:MAX_VALUE_CHARS])
    if kind == "array_value":
        return [_any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()[:MAX_VALUE_CHARS]
    return getattr(value, kind)


def attributes_of(pairs: Any, limit: int = MAX_ATTRIBUTES) -> dict[str, Any]:
    out: dict[str, Any] = {}
    nested = False
    for kv in pairs:
        if len(out) >= limit:
            break
        value = kv.value
        kind = value.WhichOneof("value")
        # the common scalars inline (an ingest decodes every attribute of every span)
        if kind == "string_value":
            item: Any = value.string_value
            if len(item) > MAX_VALUE_CHARS:
                item = item[:MAX_VALUE_CHARS]
            if "\x00" in item:
                item = clean_text(item)
        elif kind == "int_value" or kind == "bool_value":  # int64: always fits
            item = getattr(value, kind)
        else:
            item = _any_value(value)
            nested = nested or isinstance(item, list | dict | float)
        key = kv.key
        if len(key) > 1024 or "\x00" in key:
            key = clean_text(key[:1024])
        out[key] = item
    # arrays, maps and floats may hold what JSON storage refuses (NaN, NUL, depth)
    return dict(clean_json(out)) if nested else out


def _time(nanos: int) -> datetime:
    return datetime.fromtimestamp(nanos / 1e9, UTC)


#: spans decoded between two yields to the event loop (see :func:`decode_traces_sliced`)
SLICE = 32


def _parse_traces(body: bytes) -> Any:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def _span_rows(request: Any) -> Iterator[SpanRow | None]:
    """Each span of the request in order: its row, or None when it names no run."""
    for resource_spans in request.resource_spans:
        resource = attributes_of(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                attributes = attributes_of(span.attributes)
                run_id = attributes.get(RUN_ID_ATTRIBUTE) or resource.get(RUN_ID_ATTRIBUTE)
                if not isinstance(run_id, str) or len(span.trace_id) != 16 or len(
                        span.span_id) != 8:
                    yield None
                    continue
                events = clean_json([{"name": clean_text(e.name[:1024]),
                                      "time": _time(e.time_unix_nano).isoformat(),
                                      "attributes": attributes_of(e.attributes)}
                                     for e in list(span.events)[:MAX_EVENTS]]
                                    ) if span.events else []
                yield SpanRow(
                    trace_id=span.trace_id.hex(), span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None, run_id=run_id,
                    name=clean_text(span.name[:1024]) or "span", kind=int(span.kind),
                    start_time=_time(span.start_time_unix_nano),
                    end_time=_time(max(span.end_time_unix_nano, span.start_time_unix_nano)),
                    status_code=int(span.status.code),
                    status_message=clean_text(span.status.message[:MAX_VALUE_CHARS]) or None,
                    attributes=attributes, events=events,
                    scope=clean_text(scope_spans.scope.name[:256]) or None)


def decode_traces(body: bytes) -> list[SpanRow]:
    """The spans of an ``ExportTraceServiceRequest`` (protobuf) that name a run."""
    return [row for row in _span_rows(_parse_traces(body)) if row is not None]


async def decode_traces_sliced(body: bytes, per_slice: int = SLICE) -> list[SpanRow]:
    """:func:`decode_traces`, giving the event loop a turn every ``per_slice`` spans.

    Decoding costs the API 6-8 µs of CPU per span, and an executor posts what it ran in the
    last second in one request: a few milliseconds in one stretch for a busy executor, which
    a trigger arriving meanwhile waited for in full (the start latency's tail,
    docs/start-tail.md). In slices, another request waits for one slice (≈ 0.2 ms) at each
    of its steps; the spans are stored as before, in one statement.
    """
    rows: list[SpanRow] = []
    for seen, row in enumerate(_span_rows(_parse_traces(body)), 1):
        if row is not None:
            rows.append(row)
        if seen % per_slice == 0:
            await asyncio.sleep(0)
    return rows


async def store(pool: Pool, env: Environment, rows: list[SpanRow]) -> int:
    """Insert the spans of runs of ``env`` (others are dropped); a span seen twice (an
    exporter retrying) is kept once. Returns how many were new."""
    if not rows:
        return 0
    params = {
        # orjson: the stdlib encoder behind Jsonb was a sixth of the API's time per span
        "spans": orjson.dumps([r.wire() for r in rows]).decode(), "environment_id": env.id,
        "run_ids": sorted({r.run_id for r in rows})}
    async with one_trip(pool, begin=True) as conn:  # BEGIN, SET, INSERT, COMMIT: one round trip
        # telemetry: losing the last moment of spans in a database crash is acceptable,
        # waiting for a disk flush on every export is not (the drain pays for it)
        await conn.execute("SET LOCAL synchronous_commit = off")
        cur = await conn.execute(Q.insert_spans, params)
    return max(cur.rowcount, 0)


def decode_logs(body: bytes) -> list[dict[str, Any]]:
    """The records of an ``ExportLogsServiceRequest`` naming a run, as run_logs lines."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    request = ExportLogsServiceRequest()
    request.ParseFromString(body)
    lines: list[dict[str, Any]] = []
    for resource_logs in request.resource_logs:
        resource = attributes_of(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            for record in scope_logs.log_records:
                attributes = attributes_of(record.attributes)
                run_id = attributes.pop(RUN_ID_ATTRIBUTE, None) or resource.get(
                    RUN_ID_ATTRIBUTE)
                if not isinstance(run_id, str):
                    continue
                body_value = _any_value(record.body)
                nanos = record.time_unix_nano or record.observed_time_unix_nano
                lines.append({
                    "run_id": run_id,
                    "attempt_number": attributes.pop("ctx.attempt.number", 0),
                    "level": (record.severity_text or "info").lower(),
                    "message": body_value if isinstance(body_value, str) else str(body_value),
                    "attributes": attributes,
                    "time": _time(nanos).isoformat() if nanos else None,
                    "span_id": record.span_id.hex() if len(record.span_id) == 8 else None,
                })
    return lines


async def delete_expired(pool: Pool, days: int, batch: int = 10_000) -> int:
    """Delete spans received more than ``days`` ago, in batches; returns how many."""
    deleted = 0
    while True:
        async with pool.connection() as conn:
            cur = await conn.execute(Q.delete_expired_spans, {"days": days, "batch": batch})
            deleted += max(cur.rowcount, 0)
        if cur.rowcount < batch:
            return deleted
