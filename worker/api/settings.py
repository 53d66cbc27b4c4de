"""The API process's settings: built once at start (``create_app``) from the environment with
``worker.common.settings``'s readers, then passed down; the engine gets its part
(:class:`~worker.engine.settings.EngineSettings`). README "Configuration" lists every variable."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from worker.common.settings import SettingsError, env_choice, env_int, env_str
from worker.engine import secret_box
from worker.engine.settings import EngineSettings


@dataclass(frozen=True)
class Settings:
    database_url: str
    engine: EngineSettings = field(default_factory=EngineSettings)
    pool_size: int = 10
    #: base URL clients reach this API at (waitpoint callback URLs are built on it); by
    #: default the address the server listens on, never the request's Host header
    public_url: str | None = None
    #: bearer token that opens /metrics; unset: /metrics answers 404
    metrics_token: str | None = field(default=None, repr=False)
    #: failed authentications per client address and minute before 429s
    auth_failures_per_minute: int = 60
    #: realtime (SSE) streams and long polls per environment and process
    max_sse_per_env: int = 500
    max_long_polls_per_env: int = 500
    #: password of the dashboard's built-in ``admin`` user; unset: no such login
    dashboard_password: str | None = field(default=None, repr=False)
    #: ``text`` or ``json`` log lines; None leaves logging as the launcher set it
    log_format: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        url = env_str("DATABASE_URL", environ=environ)
        if not url:
            raise SettingsError("DATABASE_URL is not set: point it at the engine's Postgres")
        secret_box.check_configured_key(environ)  # a malformed key fails now, not at first use
        log_format = env_str("TRIGGER_LOG_FORMAT", environ=environ)
        return cls(
            database_url=url,
            engine=EngineSettings.from_env(environ),
            public_url=(env_str("TRIGGER_PUBLIC_URL", "", environ=environ) or "").rstrip("/")
            or None,
            metrics_token=env_str("TRIGGER_METRICS_TOKEN", environ=environ),
            auth_failures_per_minute=env_int("TRIGGER_AUTH_FAILURES_PER_MINUTE", 60, minimum=0,
                                             environ=environ),
            max_sse_per_env=env_int("TRIGGER_MAX_SSE_PER_ENV", 500, minimum=1, environ=environ),
            max_long_polls_per_env=env_int("TRIGGER_MAX_LONG_POLLS_PER_ENV", 500, minimum=1,
                                           environ=environ),
            dashboard_password=env_str("TRIGGER_DASHBOARD_PASSWORD", environ=environ),
            log_format=log_format and env_choice("TRIGGER_LOG_FORMAT", "text", ("text", "json"),
                                                 environ=environ),
        )
