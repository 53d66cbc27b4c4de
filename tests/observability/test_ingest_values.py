"""Attribute values on the way in (worker/engine/spans.py decodes the common scalars inline):
what is stored for each OTLP value kind, NUL characters, non-finite numbers, nesting, and the
spans of a batch naming several runs, some of another environment or unknown."""

from __future__ import annotations

import os
import uuid

import httpx
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tests.conftest import ApiServer
from tests.observability.test_ingest import PROTOBUF, _run, _traces
from worker.common.limits import NUL_ESCAPE
from worker.engine.keys import create_project


def _span(run_id: str, span_id: bytes, values: dict[str, AnyValue]) -> Span:
    return Span(trace_id=os.urandom(16), span_id=span_id, name="values",
                start_time_unix_nano=1_700_000_000_000_000_000,
                end_time_unix_nano=1_700_000_000_250_000_000,
                attributes=[KeyValue(key="ctx.run.id", value=AnyValue(string_value=run_id)),
                            *(KeyValue(key=k, value=v) for k, v in values.items())])


def test_every_value_kind_is_stored_as_before(
    api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    mine = httpx.Client(base_url=api_server.url, headers=api_server.headers(project_keys["dev"]))
    stranger = create_project(api_server.database_url, f"p-{uuid.uuid4().hex[:8]}")["dev"]
    other = httpx.Client(base_url=api_server.url, headers=api_server.headers(stranger))
    run_id, second, foreign = _run(mine), _run(mine), _run(other)
    values = {
        "s": AnyValue(string_value="plain"),
        "nul": AnyValue(string_value="a\x00b"),
        "key\x00nul": AnyValue(bool_value=True),
        "i": AnyValue(int_value=-(2**63)),
        "b": AnyValue(bool_value=False),
        "d": AnyValue(double_value=0.25),
        "nan": AnyValue(double_value=float("nan")),
        "arr": AnyValue(array_value=ArrayValue(values=[
            AnyValue(int_value=1), AnyValue(string_value="x\x00")])),
        "map": AnyValue(kvlist_value=KeyValueList(values=[
            KeyValue(key="inner", value=AnyValue(double_value=float("inf")))])),
        "raw": AnyValue(bytes_value=b"\x00\x01"),
        "empty": AnyValue(),
    }
    body = _traces(_span(run_id, b"\x11" * 8, values),
                   _span(second, b"\x12" * 8, {"s": AnyValue(string_value="two")}),
                   _span(foreign, b"\x13" * 8, {}),  # another environment's run: dropped
                   _span("run_nobody", b"\x14" * 8, {}))
    assert mine.post("/otel/v1/traces", content=body, headers=PROTOBUF).status_code == 200
    stored = mine.get(f"/api/v1/runs/{run_id}/spans/{'11' * 8}").json()["data"]["properties"]
    assert stored == {
        "ctx.run.id": run_id, "s": "plain", "nul": f"a{NUL_ESCAPE}b",
        f"key{NUL_ESCAPE}nul": True, "i": -(2**63), "b": False, "d": 0.25, "nan": "nan",
        "arr": [1, f"x{NUL_ESCAPE}"], "map": {"inner": "inf"}, "raw": "AAE=", "empty": None}
    two = mine.get(f"/api/v1/runs/{second}/spans/{'12' * 8}").json()
    assert two["data"]["properties"]["s"] == "two" and two["data"]["durationMs"] == 250
    assert other.get(f"/api/v1/runs/{foreign}/trace").json()["trace"]["spanCount"] == 1
