"""The executors' span exporter to our API (worker/runtime/span_export.py) against a real HTTP
server: OTLP protobuf, the bearer header, retries of transient answers, a closed keep-alive."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult

from worker.runtime.span_export import ApiSpanExporter


class Receiver(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.statuses: list[int] = []  # answers to give, in order; then 200
        self.bodies: list[ExportTraceServiceRequest] = []
        self.headers_seen: list[dict[str, str]] = []
        self.close_after_each = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/otel/v1/traces"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.headers_seen.append(dict(self.headers))
        status = self.server.statuses.pop(0) if self.server.statuses else 200
        if status == 200:
            self.server.bodies.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(status)
        self.send_header("Content-Length", "0")
        if self.server.close_after_each:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _spans(exporter: ApiSpanExporter, names: list[str]) -> None:
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    for name in names:
        tracer.start_span(name).end()


def _names(receiver: Receiver) -> list[str]:
    return [span.name for body in receiver.bodies for rs in body.resource_spans
            for ss in rs.scope_spans for span in ss.spans]


def test_spans_arrive_as_otlp_protobuf_with_the_key(receiver: Receiver) -> None:
    exporter = ApiSpanExporter(receiver.url, {"authorization": "Bearer tr_dev_k"})
    _spans(exporter, ["one", "two"])
    assert _names(receiver) == ["one", "two"]
    seen = receiver.headers_seen[0]
    assert seen["authorization"] == "Bearer tr_dev_k"
    assert seen["Content-Type"] == "application/x-protobuf"


def test_transient_answers_are_retried_and_refusals_are_not(receiver: Receiver) -> None:
    exporter = ApiSpanExporter(receiver.url, {}, timeout=5)
    receiver.statuses = [503, 429]
    _spans(exporter, ["after two retries"])
    assert _names(receiver) == ["after two retries"]
    receiver.statuses = [401]
    provider = TracerProvider(shutdown_on_exit=False)
    span = provider.get_tracer("t").start_span("refused")
    span.end()
    assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    assert len(receiver.headers_seen) == 4  # one try each for the 401: no retry


def test_a_closed_connection_is_reopened(receiver: Receiver) -> None:
    receiver.close_after_each = True
    exporter = ApiSpanExporter(receiver.url, {})
    _spans(exporter, ["a", "b", "c"])
    assert _names(receiver) == ["a", "b", "c"]


def test_no_server_fails_within_the_timeout() -> None:
    exporter = ApiSpanExporter("http://127.0.0.1:9/otel/v1/traces", {}, timeout=0.5)
    provider = TracerProvider(shutdown_on_exit=False)
    span = provider.get_tracer("t").start_span("lost")
    span.end()
    assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]
    exporter.shutdown()
    assert exporter.export([span]) is SpanExportResult.FAILURE  # type: ignore[list-item]
