"""OTLP/HTTP ingest (/otel/v1/traces, /otel/v1/logs): Trigger.dev's limits, environment
isolation, clear 4xx for bad input, retention."""

from __future__ import annotations

import asyncio
import os

import httpx
import psycopg
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from tests.conftest import ApiServer
from worker.engine.db import open_pool
from worker.engine.spans import delete_expired

PROTOBUF = {"content-type": "application/x-protobuf"}


def _kv(key: str, value: str) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(run_id: str, span_id: bytes, attributes: int = 1, events: int = 0,
          big: int = 0) -> Span:
    span = Span(trace_id=os.urandom(16), span_id=span_id, name="s",
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_000_500_000_000,
                attributes=[_kv("ctx.run.id", run_id),
                            *(_kv(f"a{i}", "v") for i in range(attributes - 1))])
    if big:
        span.attributes.append(_kv("big", "x" * big))
    for i in range(events):
        span.events.add(name=f"e{i}", time_unix_nano=1_700_000_000_100_000_000)
    return span


def _traces(*spans: Span) -> bytes:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        scope_spans=[ScopeSpans(spans=list(spans))])]).SerializeToString()


def _run(client: httpx.Client) -> str:
    # a run of a task nobody serves stays PENDING_VERSION: enough to file spans under
    register = client.post("/engine/v1/worker/register", json={
        "instance_id": "00000000-0000-0000-0000-00000000000a", "content_hash": "h",
        "tasks": [{"id": "ingest-task", "queue": {"name": "task/ingest-task"}}]})
    assert register.status_code == 200, register.text
    reply = client.post("/api/v1/tasks/ingest-task/trigger", json={"payload": {}})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def test_spans_are_limited_isolated_and_bad_input_refused(
    api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    mine = httpx.Client(base_url=api_server.url, headers=api_server.headers(project_keys["dev"]))
    other = httpx.Client(base_url=api_server.url, headers=api_server.headers(project_keys["prod"]))
    run_id = _run(mine)
    limited = _span(run_id, b"\x01" * 8, attributes=300, events=15, big=200_000)
    body = _traces(limited, _span("run_unknown", b"\x02" * 8))
    assert other.post("/otel/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    assert mine.get(f"/api/v1/runs/{run_id}/trace").json()["trace"]["spanCount"] == 1
    reply = mine.post("/otel/v1/traces", content=body, headers=PROTOBUF)
    assert reply.status_code == 200 and reply.headers["content-type"] == PROTOBUF["content-type"]
    again = mine.post("/otel/v1/traces", content=body, headers=PROTOBUF)  # an exporter retry
    assert again.status_code == 200
    tree = mine.get(f"/api/v1/runs/{run_id}/trace").json()["trace"]
    assert tree["spanCount"] == 2  # the run's span and the stored one, once
    [stored] = tree["rootSpan"]["children"]
    assert stored["id"] == "01" * 8 and stored["data"]["durationMs"] == 500
    assert len(stored["data"]["properties"]) == 256
    assert len(stored["data"]["events"]) == 10
    one = mine.get(f"/api/v1/runs/{run_id}/spans/{'01' * 8}").json()
    assert one["id"] == "01" * 8 and "children" not in one
    assert "big" not in stored["data"]["properties"]  # the 257th attribute was dropped
    capped = _span(run_id, b"\x03" * 8, big=200_000)
    mine.post("/otel/v1/traces", content=_traces(capped), headers=PROTOBUF)
    big = mine.get(f"/api/v1/runs/{run_id}/spans/{'03' * 8}").json()
    assert len(big["data"]["properties"]["big"]) == 131_072

    assert httpx.post(f"{api_server.url}/otel/v1/traces", content=body,
                      headers=PROTOBUF).status_code == 401
    wrong_type = mine.post("/otel/v1/traces", content=body,
                           headers={"content-type": "application/json"})
    assert wrong_type.status_code == 415 and "protobuf" in wrong_type.json()["error"]
    garbage = mine.post("/otel/v1/traces", content=b"\xff\x00garbage", headers=PROTOBUF)
    assert garbage.status_code == 400 and "ExportTraceServiceRequest" in garbage.json()["error"]
    assert mine.get(f"/api/v1/runs/{run_id}/spans/nothex").status_code == 400
    assert mine.get(f"/api/v1/runs/{run_id}/spans/{'09' * 8}").status_code == 404
    assert other.get(f"/api/v1/runs/{run_id}/trace").status_code == 404
    assert other.get(f"/api/v1/runs/{run_id}/logs").status_code == 404

    logs = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(
        log_records=[LogRecord(time_unix_nano=1_700_000_000_000_000_000, severity_text="WARN",
                               body=AnyValue(string_value="from a collector"),
                               span_id=b"\x01" * 8,
                               attributes=[_kv("ctx.run.id", run_id), _kv("k", "v")])])])])
    assert mine.post("/otel/v1/logs", content=logs.SerializeToString(),
                     headers=PROTOBUF).status_code == 200
    [line] = mine.get(f"/api/v1/runs/{run_id}/logs").json()["data"]
    assert line["message"] == "from a collector" and line["level"] == "warn"
    assert line["spanId"] == "01" * 8 and line["attributes"] == {"k": "v"}

    # retention: spans received long ago go, recent ones stay
    with psycopg.connect(api_server.database_url, autocommit=True) as conn:
        conn.execute("UPDATE run_spans SET received_at = now() - interval '40 days' "
                     "WHERE run_id = %s AND span_id = %s", (run_id, "01" * 8))

    async def sweep() -> int:
        pool = await open_pool(api_server.database_url, max_size=2)
        try:
            return await delete_expired(pool, 30)
        finally:
            await pool.close()

    assert asyncio.run(sweep()) >= 1
    left = mine.get(f"/api/v1/runs/{run_id}/trace").json()["trace"]["rootSpan"]["children"]
    assert [c["id"] for c in left] == ["03" * 8]
