"""Traces and logs of runs (docs/api.md, "Traces"): OTLP/HTTP ingest and the read-back API.

* ``POST /otel/v1/traces`` / ``POST /otel/v1/logs``: OTLP/HTTP protobuf
  (``application/x-protobuf``), authenticated with the environment's secret key;
* ``GET /api/v1/runs/{id}/trace`` (span tree), ``/events`` (flat spans), ``/logs``
  (paginated, level filter), ``/spans/{spanId}``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

# The OTLP messages are imported with the API, not at the first export: importing them took
# 13-18 ms of the event loop inside the first ``/otel/v1/traces`` request, which lands about a
# second after a worker's first runs, and delayed a trigger arriving meanwhile by as much (the
# latency benchmark's maximum; docs/start-tail.md). Imported before the API's gc.freeze(),
# they stay out of the collector's way too. (engine/spans.py imports them when it decodes:
# other users of the engine need not load them.)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,  # noqa: F401  (loaded for spans.decode_logs)
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,  # noqa: F401  (loaded for spans.decode_traces)
    ExportTraceServiceResponse,
)

from worker.api.auth import authenticate
from worker.api.bodies import read_body
from worker.api.state import engine_of
from worker.engine import leases, spans, trace_view
from worker.engine.errors import EngineError, Kind
from worker.engine.keys import Environment

router = APIRouter()
Env = Annotated[Environment, Depends(authenticate)]
PROTOBUF = "application/x-protobuf"


class UnsupportedMediaType(EngineError):
    kind = Kind.unsupported


def _protobuf(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != PROTOBUF:
        raise UnsupportedMediaType(
            f"OTLP/HTTP here takes protobuf: send Content-Type: {PROTOBUF} (got {kind or 'none'})")


@router.post("/otel/v1/traces")
async def otlp_traces(request: Request, env: Env) -> Response:
    _protobuf(request)
    body = await read_body(request)
    try:
        rows = await spans.decode_traces_sliced(body)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise EngineError(f"not an OTLP ExportTraceServiceRequest: {exc}") from None
    await engine_of(request).store_spans(env, rows)
    return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)


@router.post("/otel/v1/logs")
async def otlp_logs(request: Request, env: Env) -> Response:
    _protobuf(request)
    body = await read_body(request)
    try:
        lines = spans.decode_logs(body)
    except Exception as exc:
        raise EngineError(f"not an OTLP ExportLogsServiceRequest: {exc}") from None
    if lines:
        await leases.store_logs(engine_of(request).pool, env, lines)
    return Response(ExportLogsServiceResponse().SerializeToString(), media_type=PROTOBUF)


@router.get("/api/v1/runs/{run_id}/trace")
async def run_trace(run_id: str, request: Request, env: Env) -> dict[str, object]:
    return await engine_of(request).trace_tree(env, run_id)


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise EngineError(f"{name} must be an integer from {low} to {high}")
    return int(raw)


@router.get("/api/v1/runs/{run_id}/events")
async def run_events(run_id: str, request: Request, env: Env) -> dict[str, object]:
    """The trace's spans, flat and in order; ``limit`` (≤ 5000) and ``cursor`` page them."""
    limit = _int(request, "limit", 500, 1, 5000)
    start = _int(request, "cursor", 0, 0, trace_view.MAX_SPANS)
    tree = await engine_of(request).trace_tree(env, run_id)
    flat = trace_view.flatten(tree)
    page = flat[start:start + limit]
    more = start + limit < len(flat)
    return {"traceId": tree["trace"]["traceId"], "events": page,
            "pagination": {"next": str(start + limit) if more else None}}


@router.get("/api/v1/runs/{run_id}/logs")
async def run_logs(run_id: str, request: Request, env: Env) -> dict[str, object]:
    level = request.query_params.get("level")
    if level is not None and level not in trace_view.LEVEL_RANK:
        raise EngineError(f"level must be one of {sorted(trace_view.LEVEL_RANK)}")
    cursor = request.query_params.get("cursor") or "0"
    if not cursor.isdigit():
        raise EngineError("cursor must be the pagination.next of the previous page")
    return await engine_of(request).log_page(env, run_id, after=int(cursor),
                                     limit=_int(request, "limit", 100, 1, 1000), level=level)


@router.get("/api/v1/runs/{run_id}/spans/{span_id}")
async def run_span(run_id: str, span_id: str, request: Request, env: Env) -> dict[str, object]:
    if len(span_id) != 16 or any(c not in "0123456789abcdef" for c in span_id):
        raise EngineError("spanId is 16 lowercase hex digits")
    return await engine_of(request).trace_span(env, run_id, span_id)
