"""The hand-written OTLP encoding of the attempt span (worker/runtime/otlp_wire.py) parses to
the message the standard encoder writes for the SDK's span with the same content: every
attribute value kind, events, links, status and flags, and the concatenated request."""

from __future__ import annotations

from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from worker.runtime import otlp_wire
from worker.runtime.attempt_span import AttemptSpan

TRACE, PARENT, SPAN = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, 0x1234567890ABCDEF


class _Sink:
    def __init__(self) -> None:
        self.ended: list[AttemptSpan] = []

    def on_end(self, span: AttemptSpan) -> None:
        self.ended.append(span)


def _fill(span: Any) -> None:
    """The same calls on either kind of span (what task code may do to the current span;
    ``mixed_bad`` is kept or dropped as the installed SDK does)."""
    span.set_attribute("s", "text é")
    span.set_attribute("ctx.run.id", "run_x")  # set again: moves to the end, as in the SDK
    span.set_attribute("neg", -(2**40))
    span.set_attribute("big", 2**62)
    span.set_attributes({"f": -1.5, "yes": True, "no": False, "none": None,
                         "strs": ["a", "b"], "ints": (1, 2), "mixed_bad": {"a": 1},
                         "long": "x" * 300})
    span.add_event("e1", {"k": "v", "n": 3}, timestamp=1_700_000_000_000_000_123)
    span.add_event("e2", timestamp=1_700_000_000_000_000_456)
    span.add_link(SpanContext(TRACE + 1, PARENT + 1, is_remote=True,
                              trace_flags=TraceFlags(TraceFlags.SAMPLED)), {"why": "fan-in"})
    span.set_status(Status(StatusCode.ERROR, "went wrong"))
    span.set_status(StatusCode.UNSET)  # ignored by both
    span.end(end_time=1_700_000_001_000_000_000)


def _sdk_span() -> PbSpan:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.get_empty())
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    parent = otel.set_span_in_context(NonRecordingSpan(SpanContext(
        TRACE, PARENT, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))))
    token = otel_context.attach(parent)
    try:
        span = provider.get_tracer("trigger.dev").start_span(
            "Attempt 1", attributes={"ctx.run.id": "run_x", "trigger.resumed": False},
            start_time=1_700_000_000_000_000_000)
    finally:
        otel_context.detach(token)
    _fill(span)
    [done] = exporter.get_finished_spans()
    [resource_spans] = encode_spans([done]).resource_spans
    [pb] = resource_spans.scope_spans[0].spans
    pb.span_id = SPAN.to_bytes(8, "big")  # random in the SDK
    return pb


def _own_span() -> tuple[PbSpan, bytes]:
    sink = _Sink()
    span = AttemptSpan("Attempt 1", TRACE, SPAN, PARENT,
                       {"ctx.run.id": "run_x", "trigger.resumed": False}, sink)
    span.start_time = 1_700_000_000_000_000_000
    _fill(span)
    assert sink.ended == [span] and not span.is_recording()
    span.set_attribute("after", "end")  # ignored once ended, as the SDK does
    encoded = span.encoded()
    return PbSpan.FromString(encoded), encoded


def test_attempt_span_bytes_parse_as_the_sdk_span() -> None:
    sdk, (own, encoded) = _sdk_span(), _own_span()
    assert own == sdk, f"\nown:\n{own}\nsdk:\n{sdk}"

    # a request of SDK spans with the attempt spans appended parses as one request
    resource = Resource({"service.name": "p", "n": 1})
    head = encode_spans([]).SerializeToString()
    body = head + otlp_wire.resource_spans(
        otlp_wire.key_values(0x0A, resource.attributes),
        otlp_wire.text_field(0x0A, "trigger.dev"), [encoded, encoded])
    request = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = request.resource_spans
    assert {kv.key: kv.value for kv in resource_spans.resource.attributes}["n"].int_value == 1
    assert resource_spans.scope_spans[0].scope.name == "trigger.dev"
    assert list(resource_spans.scope_spans[0].spans) == [sdk, sdk]


def test_varint_and_length_edges() -> None:
    for value in (0, 1, 127, 128, 300, 2**31, 2**63 - 1, -1, -(2**63)):
        encoded = otlp_wire.any_value(value)
        assert encoded is not None
        from opentelemetry.proto.common.v1.common_pb2 import AnyValue

        assert AnyValue.FromString(encoded).int_value == value
    long_text = "y" * 70_000  # a three-byte length prefix
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue

    assert AnyValue.FromString(otlp_wire.any_value(long_text) or b"").string_value == long_text
