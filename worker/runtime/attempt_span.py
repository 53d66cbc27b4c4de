"""The attempt span without the SDK's per-span machinery (docs/api.md, "Traces").

Every run opens and closes one attempt span; through the OpenTelemetry SDK that was about half
of what telemetry cost an executor per run (the sampler, the id generator, attribute
validation into ``BoundedAttributes``, the span processors' hooks, then the OTLP encoder
building a message per attribute: docs/benchmarks.md). :class:`AttemptSpan` is a recording
span of the OpenTelemetry API — task code that takes ``trace.get_current_span()`` can set
attributes, add events, record exceptions and set the status as on any span, and the SDK's
spans started under it get it as parent — whose bytes :mod:`worker.runtime.otlp_wire` writes
when the span ends. It goes out with the SDK's spans of the same export (the batch
processor's queue and thread, :class:`worker.runtime.span_export.ApiSpanExporter`).

Used when our API is the only destination of spans and the default sampler applies
(worker/runtime/telemetry.py); otherwise the attempt span is an SDK span, as before.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace as otel
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.trace import SpanContext, Status, StatusCode
from opentelemetry.util import types

from worker.runtime import otlp_wire

#: the SDK's default span limits (OTEL_SPAN_*_COUNT_LIMIT unset), kept here too
MAX_ATTRIBUTES = 128
MAX_EVENTS = 128
MAX_LINKS = 128
_KIND_INTERNAL = 1  # Span.SPAN_KIND_INTERNAL
#: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK (the run's span,
#: its parent, comes from another process)
_FLAGS_REMOTE_PARENT = 0x300
_FLAGS_LOCAL = 0x100
_SAMPLED = otel.TraceFlags(otel.TraceFlags.SAMPLED)
_UNSET = Status(StatusCode.UNSET)  # immutable: shared


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Values as the installed SDK keeps them (its own cleaning: what it drops, converts or
    copies differs between versions); only for values from task code, not the runtime's."""
    return dict(BoundedAttributes(None, attributes or {})) if attributes else {}


def _put(into: dict[str, Any], key: str, value: Any, limit: int) -> None:
    """As the SDK's ``BoundedAttributes``: a key set again moves to the end; when full, the
    oldest goes."""
    if key in into:
        del into[key]
    elif len(into) >= limit:
        del into[next(iter(into))]
    into[key] = value


def _limited(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in _clean(attributes).items():
        _put(out, key, value, MAX_ATTRIBUTES)
    return out


class AttemptSpan(otel.Span):
    """A recording span that ends into the export queue of our API's exporter."""

    def __init__(self, name: str, trace_id: int, span_id: int, parent_span_id: int,
                 attributes: dict[str, Any], sink: Any) -> None:
        self.name = name
        self.context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED)
        self.parent_span_id = parent_span_id
        self.attributes = attributes  # built by the runtime: valid already
        self.events: list[tuple[str, int, dict[str, Any]]] = []
        self.links: list[tuple[bytes, bytes, dict[str, Any], int]] = []
        self.status = _UNSET
        self.start_time = time.time_ns()
        self.end_time: int | None = None
        #: the batch span processor of our API's exporter (its ``on_end``)
        self._sink = sink
        self._encoded: bytes | None = None

    # -- the OpenTelemetry API ------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self.context

    def is_recording(self) -> bool:
        return self.end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if type(value) in (str, bool, int) and type(key) is str and key:
            # the runtime's own (and most) values: nothing to clean or copy
            if self.end_time is None:
                _put(self.attributes, key, value, MAX_ATTRIBUTES)
            return
        self.set_attributes({key: value})

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self.end_time is not None:
            return
        for key, value in _clean(attributes).items():
            _put(self.attributes, key, value, MAX_ATTRIBUTES)

    def add_event(self, name: str, attributes: types.Attributes = None,
                  timestamp: int | None = None) -> None:
        if self.end_time is None and len(self.events) < MAX_EVENTS:
            self.events.append((name, timestamp or time.time_ns(), _limited(attributes)))

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self.end_time is None and context.is_valid and len(self.links) < MAX_LINKS:
            flags = _FLAGS_REMOTE_PARENT if context.is_remote else _FLAGS_LOCAL
            self.links.append((context.trace_id.to_bytes(16, "big"),
                               context.span_id.to_bytes(8, "big"),
                               _limited(attributes), flags))

    def update_name(self, name: str) -> None:
        if self.end_time is None:
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # as the SDK: OK is final, UNSET is never set
        if self.end_time is not None or self.status.status_code is StatusCode.OK:
            return
        if isinstance(status, StatusCode):
            status = Status(status, description)
        if status.status_code is not StatusCode.UNSET:
            self.status = status

    def record_exception(self, exception: BaseException, attributes: types.Attributes = None,
                         timestamp: int | None = None, escaped: bool = False) -> None:
        module, qualname = type(exception).__module__, type(exception).__qualname__
        values: dict[str, Any] = {
            "exception.type": f"{module}.{qualname}" if module and module != "builtins"
            else qualname,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(traceback.format_exception(exception)),
            "exception.escaped": str(escaped)}
        values.update(attributes or {})
        self.add_event("exception", values, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self.end_time is not None:
            return
        self.end_time = end_time or time.time_ns()
        # encoded here, not in the export thread: an executor ends the span after the
        # completion frame, while the supervisor handles it; the export thread holding the
        # GIL to encode a second's spans could delay the next attempt by a switch interval
        self._encoded = self.encoded()
        self._sink.on_end(self)

    # -- export ---------------------------------------------------------------------------
    def encoded(self) -> bytes:
        """The span's OTLP ``Span`` message."""
        assert self.end_time is not None
        if self._encoded is not None:
            return self._encoded
        return otlp_wire.span(
            self.context.trace_id.to_bytes(16, "big"), self.context.span_id.to_bytes(8, "big"),
            self.parent_span_id.to_bytes(8, "big"), self.name, _KIND_INTERNAL,
            self.start_time, self.end_time, self.attributes, self.events, self.links,
            self.status.status_code.value, self.status.description, _FLAGS_REMOTE_PARENT)

