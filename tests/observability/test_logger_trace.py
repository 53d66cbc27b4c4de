"""``logger.trace`` / ``logger.start_span`` are real OpenTelemetry spans (in-process SDK with an
in-memory exporter: the executor's export path is tested end to end in test_traces.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from worker import logger

_exporter = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(_exporter))


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    # this provider for this test only (the global one can be set once per process)
    monkeypatch.setattr(trace, "get_tracer",
                        lambda name, *a, **k: _provider.get_tracer(name, *a, **k))
    _exporter.clear()
    yield _exporter
    _exporter.clear()


def test_every_form_nests_under_the_current_span(spans: InMemorySpanExporter) -> None:
    @logger.trace("decorated")
    def decorated() -> int:
        return 1

    @logger.trace("decorated-async")
    async def decorated_async() -> int:
        return 2

    tracer = trace.get_tracer("user")
    with tracer.start_as_current_span("outer") as outer:
        with logger.trace("block", {"url": "https://u:secret@h/x", "token": "t"}) as span:
            span.set_attribute("rows", 3)
        assert decorated() == 1
        assert asyncio.run(decorated_async()) == 2
        assert asyncio.run(logger.trace("fn-form", lambda span: 42)) == 42
        manual = logger.start_span("manual", {"k": 1})
        manual.end()
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"outer", "block", "decorated", "decorated-async", "fn-form",
                            "manual"}
    outer_id = outer.get_span_context().span_id
    for name in ("block", "decorated", "decorated-async", "fn-form", "manual"):
        assert by_name[name].parent is not None and by_name[name].parent.span_id == outer_id
    block = by_name["block"]
    assert block.attributes == {"url": "https://u:[REDACTED]@h/x", "token": "[REDACTED]",
                                "rows": 3}
    assert by_name["manual"].attributes == {"k": 1}


def test_an_error_marks_the_span_and_propagates(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), logger.trace("failing"):
        raise ValueError("bad")
    [failing] = spans.get_finished_spans()
    assert failing.status.status_code == StatusCode.ERROR
    assert failing.events[0].name == "exception"
