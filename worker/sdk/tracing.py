"""``logger.trace``: a span around a block of task code, recorded in the run's logs.

This is a thin seam, not OpenTelemetry: a span is a name, attributes and a duration, written as
one log record (level ``info``, message ``span <name>``, attributes ``{"span": {...}}``) when
it ends, so it shows up in the run's logs beside the other records. A later exporter can
replace :func:`_record` without changing task code. The forms::

    with logger.trace("fetch", {"url": url}) as span:     # or ``async with``
        span.set_attribute("rows", 3)

    @logger.trace("parse")                                 # sync or async functions
    async def parse(text): ...

    rows = await logger.trace("fetch", lambda span: fetch(url))   # Trigger.dev's form

    span = logger.start_span("upload"); ...; span.end()           # logger.startSpan
"""

from __future__ import annotations

import functools
import inspect
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any


@dataclass
class Span:
    name: str
    attributes: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, values: dict[str, Any]) -> None:
        self.attributes.update(values)


def _record(span: Span, error: BaseException | None) -> None:
    from worker.sdk import logger as log

    info = {"name": span.name, "duration_ms": round((time.perf_counter() - span.started) * 1000,
                                                     3),
            "status": "error" if error is not None else "ok", "attributes": span.attributes}
    if error is not None:
        info["error"] = f"{type(error).__name__}: {error}"
    log._sink("info", f"span {span.name}", log.redact({"span": info}))


class _Trace:
    def __init__(self, name: str, attributes: dict[str, Any] | None) -> None:
        self.name, self.attributes = name, dict(attributes or {})
        self.span: Span | None = None

    def _open(self) -> Span:
        self.span = Span(self.name, dict(self.attributes))
        return self.span

    def _close(self, error: BaseException | None) -> None:
        if self.span is not None:
            _record(self.span, error)
            self.span = None

    def __enter__(self) -> Span:
        return self._open()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close(error)

    async def __aenter__(self) -> Span:
        return self._open()

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        tb: TracebackType | None) -> None:
        self._close(error)

    def __call__(self, fn: Any) -> Any:
        """Decorate a function: every call is one span."""
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with _Trace(self.name, self.attributes):
                    return await fn(*args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _Trace(self.name, self.attributes):
                return fn(*args, **kwargs)
        return wrapper


async def _traced_call(name: str, fn: Any, attributes: dict[str, Any] | None) -> Any:
    async with _Trace(name, attributes) as span:
        result = fn(span)
        if inspect.isawaitable(result):
            result = await result
        return result


class StartedSpan(Span):
    """``logger.start_span(name)`` (Trigger.dev's ``logger.startSpan``): ends with ``end()``."""

    def end(self, error: BaseException | None = None) -> None:
        _record(self, error)


def start_span(name: str, attributes: Any = None) -> StartedSpan:
    if not isinstance(name, str) or not name:
        raise ValueError("logger.start_span needs a span name")
    return StartedSpan(name, dict(attributes or {}))


def trace(name: str, fn: Any = None, attributes: Any = None) -> Any:
    if not isinstance(name, str) or not name:
        raise ValueError("logger.trace needs a span name")
    if isinstance(fn, dict) and attributes is None:  # logger.trace("name", {"k": v})
        fn, attributes = None, fn
    if fn is None:
        return _Trace(name, attributes)
    if not callable(fn):
        raise TypeError("logger.trace(name, fn): fn must be a function taking the span")
    return _traced_call(name, fn, attributes)
