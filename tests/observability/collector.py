"""A real OTLP/HTTP receiver for tests: an HTTP server decoding opentelemetry-proto messages."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    status_code: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind and kind not in ("array_value", "kvlist_value") else str(v)


class Collector:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.logs: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                if self.path.endswith("/v1/traces"):
                    collector._traces(body)
                elif self.path.endswith("/v1/logs"):
                    collector._logs(body)
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _traces(self, body: bytes) -> None:
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for rs in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    with self.lock:
                        self.spans.append(ReceivedSpan(
                            s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex() or None,
                            s.name, s.status.code,
                            {kv.key: _value(kv.value) for kv in s.attributes}, resource))

    def _logs(self, body: bytes) -> None:
        request = ExportLogsServiceRequest()
        request.ParseFromString(body)
        for rl in request.resource_logs:
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    with self.lock:
                        self.logs.append({"body": _value(r.body), "span_id": r.span_id.hex(),
                                          "trace_id": r.trace_id.hex(),
                                          "severity": r.severity_text})

    def of_run(self, run_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.attributes.get("ctx.run.id") == run_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
