"""The executors' span exporter to our API: OTLP/HTTP protobuf over ``http.client``.

The OpenTelemetry OTLP/HTTP exporter sends with ``requests`` (and urllib3, charset_normalizer,
its exporter metrics): ~75 ms of the zygote's start, which is on the cold-start path, and
memory in every worker process (docs/cold-start.md). This one encodes
with the same OTLP encoder and posts on one keep-alive connection of the standard library,
built in the zygote (no socket until the first export, in the executor). Exporters a project
configures (``telemetry.exporters``, ``OTEL_EXPORTER_OTLP_*``) stay the standard ones.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Mapping, Sequence
from urllib.parse import urlsplit

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from worker.runtime import otlp_wire
from worker.runtime.attempt_span import AttemptSpan

#: statuses worth another try (as the OTLP exporter retries them)
_TRANSIENT = frozenset({429, 502, 503, 504})
#: the attempt spans' ``InstrumentationScope`` (the tracer ``trigger.dev``, no version)
_SCOPE = otlp_wire.text_field(0x0A, "trigger.dev")


def behind_proxy(url: str) -> bool:
    """Whether the proxy variables (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, less
    ``NO_PROXY``) send ``url`` through a proxy: ``http.client`` does not follow them, so the
    standard exporter (requests) is used then, as before."""
    import urllib.request

    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get(parts.scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(parts.hostname or "")


def encode_sdk_spans(spans: Sequence[ReadableSpan]) -> bytes:
    """The SDK's spans by OpenTelemetry's protobuf encoder, imported on first use: an attempt
    span (the only span of a run that makes none of its own) is encoded by hand, so the
    encoder (protobuf, ~15 ms) is off the cold start's path until the first executor is forked;
    the zygote imports it right after that (worker/runtime/zygote.py, ``warm``)."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    return bytes(encode_spans(spans).SerializeToString())


class ApiSpanExporter(SpanExporter):
    def __init__(self, endpoint: str, headers: Mapping[str, str], timeout: float = 10.0) -> None:
        parts = urlsplit(endpoint)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or "localhost"
        self._port = parts.port
        self._path = parts.path or "/"
        self._headers = {**headers, "Content-Type": "application/x-protobuf",
                         "User-Agent": "trigger-worker"}
        self._timeout = timeout
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # the export thread and a force_flush may both send
        self._shutdown = False
        #: this process's resource (set by worker.runtime.telemetry.setup): what the
        #: attempt spans (worker/runtime/attempt_span.py) in a batch are sent under
        self.resource: Resource | None = None
        self._resource_bytes: tuple[Resource, bytes] | None = None

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                from worker.sdk.transport import ssl_context  # the SDK's, built in the zygote

                self._conn = http.client.HTTPSConnection(self._host, self._port,
                                                         timeout=self._timeout,
                                                         context=ssl_context())
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self._timeout)
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _post(self, body: bytes) -> int:
        conn = self._connection()
        try:
            conn.request("POST", self._path, body=body, headers=self._headers)
            reply = conn.getresponse()
            reply.read()
        except (OSError, http.client.HTTPException):
            self._close()
            raise
        if reply.will_close:
            self._close()
        return reply.status

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:  # + AttemptSpan s
        if self._shutdown:
            return SpanExportResult.FAILURE
        body = self._encode(spans)
        deadline = time.monotonic() + self._timeout
        delay = 0.0  # the first retry at once: the kept-alive connection may just have closed
        with self._lock:
            while True:
                try:
                    status = self._post(body)
                except (OSError, http.client.HTTPException):
                    status = None  # refused, reset, timed out
                if status is not None and status < 300:
                    return SpanExportResult.SUCCESS
                if status is not None and status not in _TRANSIENT:
                    return SpanExportResult.FAILURE
                if self._shutdown or time.monotonic() + delay > deadline:
                    return SpanExportResult.FAILURE
                time.sleep(delay)
                delay = min(max(delay * 2, 0.1), 2.0)

    def _encode(self, spans: Sequence[ReadableSpan | AttemptSpan]) -> bytes:
        """One ``ExportTraceServiceRequest``: the SDK's spans by the standard encoder, the
        attempt spans by hand, appended (protobuf concatenation, worker/runtime/otlp_wire.py)."""
        sdk = [s for s in spans if not isinstance(s, AttemptSpan)]
        body = encode_sdk_spans(sdk) if sdk else b""
        if len(sdk) < len(spans):
            own = [s.encoded() for s in spans if isinstance(s, AttemptSpan)]
            body += otlp_wire.resource_spans(self._resource(), _SCOPE, own)
        return body

    def _resource(self) -> bytes:
        resource = self.resource or Resource.get_empty()
        if self._resource_bytes is None or self._resource_bytes[0] is not resource:
            self._resource_bytes = resource, otlp_wire.key_values(0x0A, resource.attributes)
        return self._resource_bytes[1]

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # export() sends synchronously: nothing is buffered here

    def shutdown(self) -> None:
        self._shutdown = True
        with self._lock:
            self._close()
