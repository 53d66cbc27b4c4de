"""The attempt span of an executor that died mid-run, recorded by the supervisor.

The executor exports its attempt span when the attempt ends; a process killed for memory
(OOM), for overrunning max_duration, or crashing (SIGKILL, segfault) never does. The
supervisor then sends the span itself to ``/otel/v1/traces`` with the id the executor would
have used (worker/runtime/trace_ids.py), status ERROR, so the trace shows how the attempt
ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.common.protocol import DequeuedRun, Wire
from worker.runtime.trace_ids import attempt_span_id, attempt_span_name, run_span

if TYPE_CHECKING:
    from opentelemetry.proto.common.v1.common_pb2 import KeyValue

    from worker.runtime.api_client import WorkerApi


def _kv(key: str, value: str | int | bool) -> KeyValue:
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def died_attempt_request(run: DequeuedRun, started_monotonic: float, error: Wire,
                         service: str) -> bytes:
    """An ``ExportTraceServiceRequest`` (protobuf) with the dead attempt's span."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

    now_ns = time.time_ns()
    start_ns = now_ns - int((time.monotonic() - started_monotonic) * 1e9)
    trace_id, parent = run_span(run)
    code = str(error.get("code") or error.get("name") or error.get("type") or "CRASHED")
    message = str(error.get("message") or error.get("raw") or code)[:1000]
    span = Span(
        trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(attempt_span_id(run)),
        parent_span_id=bytes.fromhex(parent), name=attempt_span_name(run),
        kind=Span.SPAN_KIND_INTERNAL, start_time_unix_nano=start_ns, end_time_unix_nano=now_ns,
        attributes=[_kv("ctx.run.id", run.run_id),
                    _kv("ctx.attempt.number", run.attempt_number),
                    _kv("ctx.task.id", run.task_id),
                    _kv("trigger.span.kind", "attempt"),
                    _kv("trigger.error.type", code),
                    _kv("trigger.recorded_by", "supervisor")],
        status=Status(code=Status.STATUS_CODE_ERROR, message=message))
    span.events.add(name="exception", time_unix_nano=now_ns,
                    attributes=[_kv("exception.type", code), _kv("exception.message", message)])
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=[_kv("service.name", service)]),
        scope_spans=[ScopeSpans(spans=[span])])])
    return request.SerializeToString()


async def record_died_attempt(api: WorkerApi, run: DequeuedRun, started_monotonic: float,
                              error: Wire, emit: Callable[[Wire], None]) -> None:
    """Send the died attempt's span (a failure to send is reported through ``emit``)."""
    body = died_attempt_request(run, started_monotonic, error, run.ctx.project.ref)
    try:
        await api.send("/otel/v1/traces", body, content_type="application/x-protobuf",
                       attempts=3)
    except Exception as exc:
        emit({"type": "error", "message": f"recording the span failed: {exc}"})
