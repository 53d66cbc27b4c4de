"""The engine's settings: built once at the API process's start (``worker.api.settings``) and
handed to the :class:`~worker.engine.engine.Engine` and its background services. A bad value
fails at start, naming the variable (``worker.common.settings``); README "Configuration" lists
every variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.common.settings import env_bool, env_float, env_int, env_str


@dataclass(frozen=True)
class AlertSettings:
    """The alerter (``services/alerter.py``): its sweep and the SMTP server it sends with."""

    interval: float = 5.0
    lag: float = 2.0
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_from: str = "alerts@trigger-worker.local"
    smtp_user: str = ""
    smtp_password: str = field(default="", repr=False)
    smtp_starttls: bool = False

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertSettings:
        return cls(
            interval=env_float("TRIGGER_ALERTS_INTERVAL", 5.0, minimum=0.01, environ=environ),
            lag=env_float("TRIGGER_ALERTS_LAG", 2.0, minimum=0, environ=environ),
            smtp_host=env_str("TRIGGER_SMTP_HOST", "", environ=environ) or "",
            smtp_port=env_int("TRIGGER_SMTP_PORT", 25, minimum=1, environ=environ),
            smtp_from=env_str("TRIGGER_SMTP_FROM", cls.smtp_from, environ=environ) or "",
            smtp_user=env_str("TRIGGER_SMTP_USER", "", environ=environ) or "",
            smtp_password=env_str("TRIGGER_SMTP_PASSWORD", "", environ=environ) or "",
            smtp_starttls=env_bool("TRIGGER_SMTP_STARTTLS", False, environ=environ),
        )


@dataclass(frozen=True)
class RetentionSettings:
    """The retention service (``services/retention.py``)."""

    #: finished runs older than this are deleted (0: never)
    days: int = 30
    batch: int = 500
    #: seconds between sweeps
    interval: float = 300.0
    #: seconds between two batches of one sweep (lets other transactions through)
    pause: float = 0.02
    #: spans received longer ago than this are deleted, whatever their run (0: never)
    span_days: int = 30

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetentionSettings:
        return cls(
            days=env_int("TRIGGER_RETENTION_DAYS", 30, minimum=0, environ=environ),
            batch=env_int("TRIGGER_RETENTION_BATCH", 500, minimum=1, environ=environ),
            interval=float(env_int("TRIGGER_RETENTION_INTERVAL", 300, minimum=1,
                                   environ=environ)),
            span_days=env_int("TRIGGER_SPAN_RETENTION_DAYS", 30, minimum=0, environ=environ),
        )


@dataclass(frozen=True)
class EngineSettings:
    #: how long a lease lives without a heartbeat
    lease_seconds: float = 30.0
    #: how often workers heartbeat (told to them at registration)
    heartbeat_seconds: float = 5.0
    rescuer_interval: float = 1.0
    #: a waiting /dequeue long-poll looks again after this long even with no notification
    poll_fallback_seconds: float = 1.0
    expirer_interval: float = 1.0
    #: the scheduler and waitpoint timer sleep until the next due row, at most this long
    scheduler_max_sleep: float = 0.25
    #: how late a schedule created or changed on another replica may be noticed
    cron_max_sleep: float = 1.0
    #: how long the database gauges of /metrics are reused
    metrics_cache_seconds: float = 5.0
    #: a trigger leases to a long-poll waiting in the same API process (engine/handoff.py)
    direct_handoff: bool = True
    alerts: AlertSettings = field(default_factory=AlertSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineSettings:
        return cls(
            lease_seconds=env_float("TRIGGER_LEASE_SECONDS", 30.0, minimum=0.1, environ=environ),
            heartbeat_seconds=env_float("TRIGGER_HEARTBEAT_SECONDS", 5.0, minimum=0.05,
                                        environ=environ),
            rescuer_interval=env_float("TRIGGER_RESCUER_INTERVAL", 1.0, minimum=0.01,
                                       environ=environ),
            poll_fallback_seconds=env_float("TRIGGER_POLL_FALLBACK_SECONDS", 1.0, minimum=0.01,
                                            environ=environ),
            expirer_interval=env_float("TRIGGER_EXPIRER_INTERVAL", 1.0, minimum=0.01,
                                       environ=environ),
            cron_max_sleep=env_float("TRIGGER_CRON_MAX_SLEEP", 1.0, minimum=0.01,
                                     environ=environ),
            metrics_cache_seconds=env_float("TRIGGER_METRICS_CACHE_SECONDS", 5.0, minimum=0,
                                            environ=environ),
            direct_handoff=env_bool("TRIGGER_DIRECT_HANDOFF", True, environ=environ),
            alerts=AlertSettings.from_env(environ),
            retention=RetentionSettings.from_env(environ),
        )
