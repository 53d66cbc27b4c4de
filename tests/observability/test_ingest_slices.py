"""Span ingest gives the API's event loop a turn while it decodes a large batch, and loads the
OTLP messages with the API rather than in its first export (docs/start-tail.md); the rows are
the same as decoded in one go."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from worker.engine import spans


def _span(i: int, run_id: str | None) -> Span:
    attributes = [KeyValue(key="n", value=AnyValue(int_value=i))]
    if run_id is not None:
        attributes.append(KeyValue(key="ctx.run.id", value=AnyValue(string_value=run_id)))
    return Span(trace_id=os.urandom(16), span_id=os.urandom(8), name=f"s{i}",
                start_time_unix_nano=1_700_000_000_000_000_000 + i,
                end_time_unix_nano=1_700_000_000_500_000_000 + i, attributes=attributes)


def _body(count: int) -> bytes:
    # every seventh span names no run (dropped); two resources, to cross their boundary
    items = [_span(i, None if i % 7 == 0 else f"run_{i % 5}") for i in range(count)]
    half = count // 2
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(scope_spans=[ScopeSpans(spans=items[:half])]),
        ResourceSpans(scope_spans=[ScopeSpans(spans=items[half:])]),
    ]).SerializeToString()


def test_sliced_decode_gives_the_same_rows_and_lets_other_tasks_run() -> None:
    body = _body(100)
    whole = spans.decode_traces(body)
    turns = 0

    async def other() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    async def main() -> list[spans.SpanRow]:
        task = asyncio.create_task(other())
        await asyncio.sleep(0)  # the other task is waiting for its turn
        before = turns
        rows = await spans.decode_traces_sliced(body, per_slice=10)
        after = turns
        task.cancel()
        assert after - before >= 9, "the decode never gave the loop a turn"
        return rows

    sliced = asyncio.run(main())
    assert [r.wire() for r in sliced] == [r.wire() for r in whole]
    assert len(whole) == 100 - len(range(0, 100, 7))
    assert [r.name for r in whole] == [f"s{i}" for i in range(100) if i % 7]


def test_a_bad_body_is_refused_by_the_sliced_decode_too() -> None:
    try:
        asyncio.run(spans.decode_traces_sliced(b"\xff\xff not protobuf"))
    except Exception as exc:  # protobuf's DecodeError
        assert "DecodeError" in type(exc).__name__ or "parse" in str(exc).lower()
    else:
        raise AssertionError("a body that is not protobuf was decoded")


def test_the_api_loads_the_otlp_messages_at_import() -> None:
    code = ("import sys, worker.api.app; "
            "print('opentelemetry.proto.collector.trace.v1.trace_service_pb2' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "True"
