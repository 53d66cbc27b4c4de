"""The OTLP protobuf wire format of a span, written by hand (no message objects).

Building the ``opentelemetry.proto`` messages of one span (a ``KeyValue`` and an ``AnyValue``
per attribute, then ``SerializeToString``) cost an executor more than the rest of the span's
life; the bytes of the few fields an attempt span has are cheap to write directly. Protobuf
lets a sender concatenate: a repeated field is its elements written one after the other, and
two serialized ``ExportTraceServiceRequest`` s back to back parse as one with both lists — so
:func:`resource_spans` appended to a request the standard encoder wrote is still one request.

Field numbers: opentelemetry/proto/{trace,common,resource}/v1/*.proto (stable since 1.0).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

_DOUBLE = struct.Struct("<d").pack
_FIXED64 = struct.Struct("<Q").pack
_FIXED32 = struct.Struct("<I").pack


def varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 is written as its two's complement, 10 bytes
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _len_field(tag: int, payload: bytes) -> bytes:
    """A length-delimited field (``tag`` is ``field << 3 | 2``, below 128)."""
    n = len(payload)
    return bytes((tag, n)) + payload if n < 0x80 else bytes((tag,)) + varint(n) + payload


def text_field(tag: int, text: str) -> bytes:
    return _len_field(tag, text.encode("utf-8", "surrogatepass"))


def any_value(value: Any) -> bytes | None:
    """An ``AnyValue`` message's bytes; None for a value OpenTelemetry does not take."""
    if value is None:  # kept by the SDK as an empty value (read back as null)
        return b""
    if isinstance(value, str):
        return text_field(0x0A, value)
    if isinstance(value, bool):  # before int: a bool is an int
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _DOUBLE(value)
    if isinstance(value, bytes):
        return _len_field(0x3A, value)
    if isinstance(value, Mapping):  # KeyValueList { repeated KeyValue values = 1 }
        return _len_field(0x32, key_values(0x0A, value))
    if isinstance(value, Sequence):
        items = [any_value(v) for v in value]
        # ArrayValue { repeated AnyValue values = 1 }
        return _len_field(0x2A, b"".join(_len_field(0x0A, i) for i in items if i is not None))
    return None


#: encoded ``KeyValue`` fields by (tag, key, type, value): the attempt span's attributes repeat
#: from run to run (task id, span kind, attempt number...); cleared when it grows
_KV_CACHE: dict[tuple[int, str, type, Any], bytes] = {}
_KV_CACHE_MAX = 256  # each run adds its ctx.run.id: kept small (executor memory)


def key_values(tag: int, attributes: Mapping[str, Any]) -> bytes:
    """``attributes`` as repeated ``KeyValue`` fields number ``tag >> 3``."""
    out = []
    cache = _KV_CACHE
    for key, value in attributes.items():
        kind = type(value)
        cacheable = (kind is str and len(value) <= 256) or kind is int or kind is bool
        if cacheable:
            found = cache.get((tag, key, kind, value))
            if found is not None:
                out.append(found)
                continue
        encoded = any_value(value)
        if encoded is None:
            continue
        field = _len_field(tag, text_field(0x0A, key) + _len_field(0x12, encoded))
        if cacheable:
            if len(cache) >= _KV_CACHE_MAX:
                cache.clear()
            cache[(tag, key, kind, value)] = field
        out.append(field)
    return b"".join(out)


def span(trace_id: bytes, span_id: bytes, parent_span_id: bytes | None, name: str, kind: int,
         start_ns: int, end_ns: int, attributes: Mapping[str, Any],
         events: Iterable[tuple[str, int, Mapping[str, Any]]],
         links: Iterable[tuple[bytes, bytes, Mapping[str, Any], int]], status_code: int,
         status_message: str | None, flags: int) -> bytes:
    """One ``Span`` message's bytes (as ``trace_encoder`` writes the SDK's spans)."""
    parts = [b"\x0a\x10", trace_id, b"\x12\x08", span_id]
    if parent_span_id:
        parts.append(b"\x22\x08" + parent_span_id)
    parts += [text_field(0x2A, name)]
    if kind:
        parts.append(b"\x30" + varint(kind))
    parts += [b"\x39", _FIXED64(start_ns), b"\x41", _FIXED64(end_ns),
              key_values(0x4A, attributes)]
    for event_name, time_ns, event_attributes in events:
        parts.append(_len_field(0x5A, b"\x09" + _FIXED64(time_ns) + text_field(0x12, event_name)
                                + key_values(0x1A, event_attributes)))
    for link_trace, link_span, link_attributes, link_flags in links:
        parts.append(_len_field(0x6A, b"\x0a\x10" + link_trace + b"\x12\x08" + link_span
                                + key_values(0x22, link_attributes) + b"\x35"
                                + _FIXED32(link_flags)))
    status = b""
    if status_message:
        status += text_field(0x12, status_message)
    if status_code:
        status += b"\x18" + varint(status_code)
    parts += [_len_field(0x7A, status), b"\x85\x01", _FIXED32(flags)]
    return b"".join(parts)


def resource_spans(resource: bytes, scope: bytes, spans: Iterable[bytes]) -> bytes:
    """An ``ExportTraceServiceRequest`` (one ``ResourceSpans``, one ``ScopeSpans``) around
    encoded spans; ``resource`` and ``scope`` are the serialized ``Resource`` and
    ``InstrumentationScope``."""
    scope_spans = _len_field(0x0A, scope) + b"".join(_len_field(0x12, s) for s in spans)
    return _len_field(0x0A, _len_field(0x0A, resource) + _len_field(0x12, scope_spans))
