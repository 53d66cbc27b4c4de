"""OpenTelemetry in an executor: providers, exporters and the attempt span (docs/api.md, "Traces").

:func:`setup` runs in each executor AFTER the fork (never in the zygote: the SDK starts export
threads, and instrumentations patch libraries the zygote's other children share). It sets:

* a ``TracerProvider`` whose spans go, batched, over OTLP/HTTP (protobuf) to our API's
  ``/otel/v1/traces`` (authenticated with the environment's key), and to every exporter of the
  config's ``telemetry.exporters`` and, when ``OTEL_EXPORTER_OTLP_ENDPOINT`` /
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set, to that collector too (same spans);
* a ``LoggerProvider`` for ``logger.*`` / ``print`` records as OpenTelemetry log records
  (with the current span's context) when ``telemetry.log_exporters`` or
  ``OTEL_EXPORTER_OTLP_LOGS_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` name a destination.
  The run's own log view is fed by the supervisor's log frames (they survive a SIGKILL of the
  executor), each carrying its span id;
* the config's ``telemetry.instrumentations`` (``instrument()`` on each).

:func:`attempt_span` opens the attempt's span under the run's span (``traceparent`` of the
dequeued run) with the id :func:`worker.runtime.trace_ids.attempt_span_id` gives, so the
supervisor can close it in the executor's place if the process dies. When our API is the only
destination of spans it is an :class:`~worker.runtime.attempt_span.AttemptSpan` (no SDK work
per span, encoded by hand); otherwise an SDK span.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags

from worker.common.protocol import Completion, DequeuedRun
from worker.runtime.attempt_span import AttemptSpan
from worker.runtime.settings import WorkerSettings
from worker.runtime.trace_ids import attempt_span_id, attempt_span_name, run_span
from worker.sdk.context import current_context

_LEVELS = {"debug": 5, "log": 9, "info": 9, "warn": 13, "error": 17}
#: the SDK's span limits when no OTEL_*_LIMIT variable sets them (what AttemptSpan applies)
_DEFAULT_LIMITS = {"max_attributes": 128, "max_events": 128, "max_links": 128,
                   "max_span_attributes": 128, "max_event_attributes": 128,
                   "max_link_attributes": 128, "max_attribute_length": None,
                   "max_span_attribute_length": None}


class _PresetIds(RandomIdGenerator):
    """Random ids, except the next span id when one is preset (the attempt span)."""

    def __init__(self) -> None:
        self.next_span_id: int | None = None

    def generate_span_id(self) -> int:
        preset, self.next_span_id = self.next_span_id, None
        return preset if preset is not None else super().generate_span_id()


class _RunAttributes(SpanProcessor):
    """Every span started during a run carries the run's ids (instrumentation spans too), so
    the API files it under the run."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        # an executor runs one attempt at a time: its ids are set once per attempt
        if _state.run_attributes is not None and current_context() is not None:
            span.set_attributes(_state.run_attributes)

    def on_end(self, span: ReadableSpan) -> None:
        pass


class Telemetry:
    def __init__(self) -> None:
        self.tracer_provider: TracerProvider | None = None
        #: the attempt spans' tracer, made once (getting it through the global proxy on every
        #: attempt was ~8 % of an executor's CPU per run, docs/benchmarks.md)
        self.tracer: otel.Tracer | None = None
        self.logger: Any = None
        self.log_provider: Any = None
        self.ids = _PresetIds()
        #: ``ctx.run.id``, ``ctx.attempt.number``, ``ctx.task.id`` of the attempt running now
        self.run_attributes: dict[str, str | int] | None = None
        #: the resource and span exporters :func:`prepare` built in the zygote
        self.prepared: tuple[Resource, list[Any]] | None = None
        #: the batch processor of our API's exporter when it is the only destination of spans
        #: and the default sampler applies: attempt spans are then :class:`AttemptSpan` s
        self.attempt_sink: BatchSpanProcessor | None = None


_state = Telemetry()


def enabled(config: Any, settings: WorkerSettings | None = None) -> bool:
    if not (settings or WorkerSettings.from_env()).telemetry:
        return False
    return bool(getattr(getattr(config, "telemetry", None), "enabled", True))


def prepare(config: Any, api_url: str | None, secret_key: str | None) -> None:
    """In the zygote, before it forks: the resource and the span exporters, which start no
    thread. Built in each executor instead they cost it ~1.5 MiB of private pages (the
    resource detectors' thread pool, the exporters' state; docs/cold-start.md);
    built here, the executors share them. :func:`setup` uses them."""
    settings = WorkerSettings.from_env()
    if _state.prepared is not None or not enabled(config, settings):
        return
    _state.prepared = _resource(config), _exporters(config, api_url, secret_key, settings)
    # A throwaway provider's first tracer: what that does once per process (imports, the
    # warning filter's regexes) is then shared too. No exit hook keeps it alive, so its
    # at-fork hook (a weak reference) never runs.
    TracerProvider(resource=_state.prepared[0], shutdown_on_exit=False).get_tracer("trigger.dev")


def _resource(config: Any) -> Resource:
    return Resource.create({"service.name": config.project, "trigger.project": config.project,
                            **{str(k): v for k, v in config.telemetry.resource.items()}})


def _exporters(config: Any, api_url: str | None, secret_key: str | None,
               settings: WorkerSettings) -> list[Any]:
    from worker.runtime.span_export import ApiSpanExporter, behind_proxy

    exporters: list[Any] = []
    if api_url and secret_key:
        endpoint = api_url.rstrip("/") + "/otel/v1/traces"
        headers = {"authorization": f"Bearer {secret_key}"}
        if behind_proxy(endpoint):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append(OTLPSpanExporter(endpoint=endpoint, headers=headers))
        else:
            exporters.append(ApiSpanExporter(endpoint, headers))
    if settings.otlp_traces:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())  # the standard variables configure it
    exporters.extend(config.telemetry.exporters)
    return exporters


def setup(config: Any, api_url: str | None, secret_key: str | None) -> None:
    """Providers, exporters and instrumentations of this executor (call after the fork)."""
    settings = WorkerSettings.from_env()  # validated by the supervisor at its start
    if _state.tracer_provider is not None or not enabled(config, settings):
        return
    telemetry = config.telemetry
    if _state.prepared is not None:  # by the zygote
        resource, exporters = _state.prepared
        if SERVICE_INSTANCE_ID in resource.attributes:  # one per process, as the SDK makes it
            resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    else:
        resource = _resource(config)
        exporters = _exporters(config, api_url, secret_key, settings)
    provider = TracerProvider(resource=resource, id_generator=_state.ids)
    provider.add_span_processor(_RunAttributes())
    processors = [BatchSpanProcessor(exporter, schedule_delay_millis=settings.otel_export_delay_ms)
                  for exporter in exporters]
    for processor in processors:
        provider.add_span_processor(processor)
    from worker.runtime.span_export import ApiSpanExporter

    # Anything else (a collector of the user's, their exporter, a sampler, span limits of
    # their own, the SDK off) gets the attempt span as an SDK span, as before: an
    # AttemptSpan reaches our exporter only, and applies the SDK's default limits.
    tracer = provider.get_tracer("trigger.dev")
    if (len(exporters) == 1 and isinstance(exporters[0], ApiSpanExporter)
            and _makes_plain_spans(provider, tracer)):
        exporters[0].resource = resource
        _state.attempt_sink = processors[0]
    otel.set_tracer_provider(provider)
    _state.tracer_provider = provider
    _state.tracer = tracer
    _setup_logs(telemetry, resource, settings)
    for instrumentor in telemetry.instrumentations:
        instrumentor.instrument(tracer_provider=provider)


def _makes_plain_spans(provider: TracerProvider, tracer: otel.Tracer) -> bool:
    """Whether the provider records a sampled parent's children with the default limits, as
    :class:`AttemptSpan` does (read from the provider: the SDK read the variables)."""
    from opentelemetry.sdk.trace import Tracer
    from opentelemetry.sdk.trace.sampling import DEFAULT_ON

    limits = getattr(provider, "_span_limits", None)
    return (isinstance(tracer, Tracer)  # not OTEL_SDK_DISABLED
            and provider.sampler is DEFAULT_ON  # OTEL_TRACES_SAMPLER unset or the default
            and limits is not None
            and all(getattr(limits, k, 0) == v for k, v in _DEFAULT_LIMITS.items()))


def _setup_logs(telemetry: Any, resource: Resource, settings: WorkerSettings) -> None:
    exporters = list(telemetry.log_exporters)
    if settings.otlp_logs:
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter

        exporters.append(OTLPLogExporter())
    if not exporters:
        return
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

    provider = LoggerProvider(resource=resource)
    for exporter in exporters:
        provider.add_log_record_processor(
            BatchLogRecordProcessor(exporter, schedule_delay_millis=settings.otel_export_delay_ms))
    _state.log_provider = provider
    _state.logger = provider.get_logger("trigger.dev")


def emit_log(level: str, message: str, attributes: dict[str, Any]) -> None:
    """One ``logger.*`` / ``print`` record as an OpenTelemetry log record (if configured)."""
    if _state.logger is None:
        return
    from opentelemetry._logs import LogRecord, SeverityNumber

    from worker.sdk.tracing import _otel_value

    _state.logger.emit(LogRecord(
        timestamp=time.time_ns(), context=otel_context.get_current(),
        severity_text=level.upper(), severity_number=SeverityNumber(_LEVELS.get(level, 9)),
        body=message, attributes={str(k): _otel_value(v) for k, v in attributes.items()}))


def attempt_span(run: DequeuedRun) -> _AttemptScope:
    """The attempt's span, current for everything the attempt starts, as a context manager
    (it yields None when telemetry is off)."""
    return _AttemptScope(run)


class _AttemptScope:
    """A class, not a generator context manager: it is entered once per run."""

    __slots__ = ("_token", "run")

    def __init__(self, run: DequeuedRun) -> None:
        self.run = run
        self._token: object | None = None

    def __enter__(self) -> Any:
        if _state.tracer_provider is None:
            return None
        run = self.run
        trace_id, parent_span = run_span(run)
        run_attributes: dict[str, str | int] = {"ctx.run.id": run.run_id,
                                                "ctx.attempt.number": run.attempt_number,
                                                "ctx.task.id": run.task_id}
        attributes: dict[str, Any] = {
            **run_attributes, "trigger.span.kind": "attempt", "trigger.resumed": run.resumed}
        span: Any
        if _state.attempt_sink is not None:
            span = AttemptSpan(attempt_span_name(run), int(trace_id, 16),
                               int(attempt_span_id(run), 16), int(parent_span, 16), attributes,
                               _state.attempt_sink)
        else:
            parent = otel.set_span_in_context(NonRecordingSpan(SpanContext(
                int(trace_id, 16), int(parent_span, 16), is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED))))
            _state.ids.next_span_id = int(attempt_span_id(run), 16)
            tracer = _state.tracer or otel.get_tracer("trigger.dev")
            span = tracer.start_span(attempt_span_name(run), context=parent,
                                     attributes=attributes)
        # set after the attempt span started: it has them already (_RunAttributes need not)
        _state.run_attributes = run_attributes
        self._token = otel_context.attach(otel.set_span_in_context(span))
        return span

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._token = None


def end_attempt(span: Any, completion: Completion | None, end_time: int | None = None) -> None:
    """Close the attempt span with the attempt's outcome (None: it checkpointed), at
    ``end_time`` (ns since the epoch; default now)."""
    if span is None:
        return
    if completion is None:
        span.set_attribute("trigger.checkpointed", True)
    elif not completion.ok:
        error = completion.error or {}
        message = str(error.get("message") or error.get("raw") or error.get("code") or "error")
        span.set_attribute("trigger.error.type", str(error.get("code") or error.get("name")
                                                     or error.get("type")))
        span.set_status(Status(StatusCode.ERROR, message[:1000]))
    span.end(end_time)
    _state.run_attributes = None


def flush() -> None:
    if _state.tracer_provider is not None:
        _state.tracer_provider.force_flush(5000)


def shutdown() -> None:
    """Flush and stop (the executor is exiting)."""
    if _state.tracer_provider is not None:
        _state.tracer_provider.shutdown()
    if _state.log_provider is not None:
        _state.log_provider.shutdown()
