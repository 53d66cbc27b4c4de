"""``logger.trace``: an OpenTelemetry span around a block of task code.

Spans are real OpenTelemetry spans (tracer ``trigger.dev``): inside an executor they nest under
the attempt's span and are exported with it (worker/runtime/telemetry.py); elsewhere, with no
SDK set up, the OpenTelemetry API makes them no-ops. The plain API
(``trace.get_tracer(...).start_as_current_span``) nests the same way. The forms::

    with logger.trace("fetch", {"url": url}) as span:     # or ``async with``
        span.set_attribute("rows", 3)

    @logger.trace("parse")                                 # sync or async functions
    async def parse(text): ...

    rows = await logger.trace("fetch", lambda span: fetch(url))   # Trigger.dev's form

    span = logger.start_span("upload"); ...; span.end()           # logger.startSpan

:func:`operation` is the runtime's own span (hooks, waits, steps, child triggers): it records
a checkpoint (:class:`worker.sdk.errors.Suspended`) as an attribute, not as an error.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from types import TracebackType
from typing import Any

from opentelemetry import trace as otel
from opentelemetry.trace import Span, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from worker.sdk.errors import Suspended
from worker.sdk.redaction import redact

TRACER_NAME = "trigger.dev"
#: the most attribute values a user span keeps (Trigger.dev's limit, enforced again on ingest)
_MAX_ATTRIBUTES = 256


def tracer() -> otel.Tracer:
    return otel.get_tracer(TRACER_NAME)


def _otel_value(value: object) -> AttributeValue:
    """An attribute value OpenTelemetry accepts (str, bool, int, float or a list of one)."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float)
                                               for v in value):
        return list(value)
    return str(value)


def _attributes(values: Mapping[str, object] | None) -> dict[str, AttributeValue]:
    clean = redact(dict(values or {}))
    return {str(k): _otel_value(v) for k, v in list(clean.items())[:_MAX_ATTRIBUTES]
            if v is not None}


def _fail(span: Span, error: BaseException) -> None:
    if isinstance(error, Suspended):  # a checkpoint: the run goes on in another process
        span.set_attribute("trigger.checkpointed", True)
        return
    span.record_exception(error)
    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


@contextlib.contextmanager
def operation(name: str, attributes: Mapping[str, object] | None = None) -> Iterator[Span]:
    """A span of the runtime (hook, wait, step, child trigger) under the current span."""
    with tracer().start_as_current_span(name, attributes=_attributes(attributes),
                                        record_exception=False,
                                        set_status_on_exception=False) as span:
        try:
            yield span
        except BaseException as error:
            _fail(span, error)
            raise


class Operation:
    """:func:`operation` for code that cannot be indented into a ``with`` block: the span
    is current from here until :meth:`finish`."""

    def __init__(self, name: str, attributes: Mapping[str, object] | None = None) -> None:
        self._cm = operation(name, attributes)
        self._cm.__enter__()

    def finish(self, error: BaseException | None) -> None:
        with contextlib.suppress(BaseException):
            if error is None:
                self._cm.__exit__(None, None, None)
            else:
                self._cm.__exit__(type(error), error, error.__traceback__)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, if one is recording (sent on triggers so a
    child run joins this trace)."""
    ctx = otel.get_current_span().get_span_context()
    if not ctx.is_valid:
        return None
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def current_span_id() -> str | None:
    ctx = otel.get_current_span().get_span_context()
    return f"{ctx.span_id:016x}" if ctx.is_valid else None


class _Trace:
    def __init__(self, name: str, attributes: Mapping[str, object] | None) -> None:
        self.name, self.attributes = name, dict(attributes or {})
        self._cm: contextlib.AbstractContextManager[Span] | None = None

    def _open(self) -> Span:
        self._cm = operation(self.name, self.attributes)
        return self._cm.__enter__()

    def _close(self, error: BaseException | None) -> None:
        cm, self._cm = self._cm, None
        if cm is not None:
            if error is None:
                cm.__exit__(None, None, None)
            else:
                with contextlib.suppress(BaseException):
                    cm.__exit__(type(error), error, error.__traceback__)

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

    def __call__(self, fn: Callable[..., object]) -> Any:
        """Decorate a function: every call is one span."""
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: object, **kwargs: object) -> Any:
                async with _Trace(self.name, self.attributes):
                    return await fn(*args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: object, **kwargs: object) -> Any:
            with _Trace(self.name, self.attributes):
                return fn(*args, **kwargs)
        return wrapper


async def _traced_call(
    name: str, fn: Callable[[Span], object], attributes: Mapping[str, object] | None
) -> object:
    async with _Trace(name, attributes) as span:
        result = fn(span)
        if inspect.isawaitable(result):
            result = await result
        return result


class StartedSpan:
    """``logger.start_span(name)`` (Trigger.dev's ``logger.startSpan``): ends with ``end()``.
    It is not made current (like ``tracer.start_span``): spans started meanwhile do not nest
    under it."""

    def __init__(self, name: str, attributes: Mapping[str, object]) -> None:
        self.name = name
        self.span = tracer().start_span(name, attributes=_attributes(attributes))

    def set_attribute(self, key: str, value: object) -> None:
        self.span.set_attributes(_attributes({key: value}))

    def set_attributes(self, values: Mapping[str, object]) -> None:
        self.span.set_attributes(_attributes(values))

    def end(self, error: BaseException | None = None) -> None:
        if error is not None:
            _fail(self.span, error)
        self.span.end()


def start_span(name: str, attributes: Mapping[str, object] | None = None) -> StartedSpan:
    if not isinstance(name, str) or not name:
        raise ValueError("logger.start_span needs a span name")
    return StartedSpan(name, dict(attributes or {}))


def trace(name: str, fn: object = None, attributes: Mapping[str, object] | None = None) -> Any:
    if not isinstance(name, str) or not name:
        raise ValueError("logger.trace needs a span name")
    if isinstance(fn, Mapping) and attributes is None:  # logger.trace("name", {"k": v})
        fn, attributes = None, fn
    if fn is None:
        return _Trace(name, attributes)
    if not callable(fn):
        raise TypeError("logger.trace(name, fn): fn must be a function taking the span")
    return _traced_call(name, fn, attributes)
