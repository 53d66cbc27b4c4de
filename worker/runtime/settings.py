"""The worker's settings: read once from the environment (worker.common.settings), frozen.

The supervisor builds one :class:`WorkerSettings` at start (:func:`WorkerSettings.from_env`);
values given on the command line (``trigger worker``, ``run_worker(...)``) override the
environment through :meth:`WorkerSettings.with_overrides`. An executor reads the same
variables, after the fork, through the same constructor (its telemetry settings). Every
variable is listed in the README's "Configuration" table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from worker.common.settings import env_bool, env_float, env_int, env_str

DEFAULT_API_URL = "http://127.0.0.1:3030"
#: runs leased ahead per executor by default: with the executing one, 4 runs per executor,
#: Celery's default prefetch multiplier. A drain is bound by round trips, not CPU, when the
#: runs leased ahead are used up before the next reply (docs/benchmarks.md, "Prefetch")
PREFETCH_PER_EXECUTOR = 3
#: runs leased ahead in all (at least) while runs are short: an executor finishes one or more
#: during a ``/complete`` round trip (runtime/slots.py)
SHORT_RUN_PREFETCH = 16


@dataclass(frozen=True)
class WorkerSettings:
    api_url: str = DEFAULT_API_URL
    #: a worker token (``tr_wkr_…``) or, in development, the environment's secret key
    secret_key: str = ""
    #: run slots of this replica; None: the project config's ``concurrency`` (default 10)
    concurrency: int | None = None
    #: kill an executor whose process group outgrows its run's machine preset
    enforce_machine_memory: bool = True
    #: the replica's Prometheus port (worker/runtime/worker_metrics.py); None: not served
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    #: the long poll of one ``/dequeue`` call (a streamed one lasts at most this long)
    dequeue_wait_ms: int = 2000
    #: ``/dequeue`` streams the runs it leases (docs/protocol.md, "Streamed dequeue"); off:
    #: one long-poll per batch (for a proxy that buffers responses)
    dequeue_stream: bool = True
    #: seconds running attempts get to finish on a graceful stop
    shutdown_grace: float = 10.0
    #: seconds after max_duration before the supervisor kills an executor that did not answer
    max_duration_grace: float = 5.0
    #: seconds a canceled run gets (on_cancel hooks, finally blocks) before its group is killed
    cancel_grace: float = 10.0
    #: seconds an executor may stay idle before it is retired (down to min_warm); None: never
    executor_idle_timeout: float | None = 300.0
    min_warm_executors: int = 1
    #: runs leased ahead of a free executor; None: :data:`PREFETCH_PER_EXECUTOR` times the
    #: pool's size
    prefetch: int | None = None
    #: while runs leased ahead are still waiting for an executor, a completion may wait up to
    #: this many ms for others to share its ``/complete`` call (fewer, fuller calls under
    #: load; an idle worker reports at once). 0: every completion is sent at once
    complete_linger_ms: float = 10.0
    #: ms between telemetry batch exports in an executor
    otel_export_delay_ms: float = 1000.0
    #: False turns tracing off in executors
    telemetry: bool = True
    #: the standard OTLP variables name a collector of the user's (the exporter reads them)
    otlp_traces: bool = False
    otlp_logs: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> WorkerSettings:
        """Raises :class:`worker.common.settings.SettingsError` naming a bad variable."""
        e = environ
        idle = env_float("TRIGGER_EXECUTOR_IDLE_TIMEOUT", 300.0, environ=e)
        prefetch = env_int("TRIGGER_PREFETCH", -1, environ=e)
        concurrency = env_int("TRIGGER_CONCURRENCY", 0, minimum=0, environ=e)
        port = env_int("TRIGGER_WORKER_METRICS_PORT", 0, minimum=0, environ=e)
        key = (env_str("TRIGGER_WORKER_TOKEN", environ=e)
               or env_str("TRIGGER_SECRET_KEY", "", environ=e) or "")
        return cls(
            api_url=env_str("TRIGGER_API_URL", DEFAULT_API_URL, environ=e) or DEFAULT_API_URL,
            secret_key=key,
            concurrency=concurrency or None,
            enforce_machine_memory=env_bool("TRIGGER_ENFORCE_MACHINE_MEMORY", True, environ=e),
            metrics_port=port or None,
            metrics_addr=env_str("TRIGGER_WORKER_METRICS_ADDR", "127.0.0.1", environ=e)
            or "127.0.0.1",
            dequeue_wait_ms=int(env_float("TRIGGER_DEQUEUE_WAIT_MS", 2000, minimum=0,
                                          environ=e)),
            dequeue_stream=env_bool("TRIGGER_DEQUEUE_STREAM", True, environ=e),
            shutdown_grace=env_float("TRIGGER_SHUTDOWN_GRACE", 10.0, minimum=0, environ=e),
            max_duration_grace=env_float("TRIGGER_MAX_DURATION_GRACE", 5.0, minimum=0,
                                         environ=e),
            cancel_grace=env_float("TRIGGER_CANCEL_GRACE", 10.0, minimum=0, environ=e),
            executor_idle_timeout=idle if idle > 0 else None,
            min_warm_executors=env_int("TRIGGER_MIN_WARM_EXECUTORS", 1, minimum=0, environ=e),
            prefetch=prefetch if prefetch >= 0 else None,
            complete_linger_ms=env_float("TRIGGER_COMPLETE_LINGER_MS", 10.0, minimum=0,
                                         environ=e),
            otel_export_delay_ms=env_float("TRIGGER_OTEL_EXPORT_DELAY_MS", 1000.0, minimum=0,
                                           environ=e),
            telemetry=env_bool("TRIGGER_TELEMETRY", True, environ=e),
            otlp_traces=bool(env_str("OTEL_EXPORTER_OTLP_ENDPOINT", environ=e)
                             or env_str("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", environ=e)),
            otlp_logs=bool(env_str("OTEL_EXPORTER_OTLP_ENDPOINT", environ=e)
                           or env_str("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", environ=e)),
        )

    def with_overrides(self, *, api_url: str | None = None, secret_key: str | None = None,
                       concurrency: int | None = None,
                       metrics_port: int | None = None) -> WorkerSettings:
        """Values given on the command line win over the environment's."""
        return replace(
            self,
            api_url=api_url or self.api_url,
            secret_key=secret_key or self.secret_key,
            concurrency=concurrency or self.concurrency,
            metrics_port=metrics_port or self.metrics_port,
        )
