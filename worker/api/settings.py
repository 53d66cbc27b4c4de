"""API server settings, from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None


@dataclass(frozen=True)
class Settings:
    database_url: str
    #: how long a lease lives without a heartbeat
    lease_seconds: float = field(default_factory=lambda: _float("TRIGGER_LEASE_SECONDS", 30.0))
    #: how often workers heartbeat (told to them at registration)
    heartbeat_seconds: float = field(
        default_factory=lambda: _float("TRIGGER_HEARTBEAT_SECONDS", 5.0)
    )
    rescuer_interval: float = field(default_factory=lambda: _float("TRIGGER_RESCUER_INTERVAL", 1.0))
    scheduler_max_sleep: float = 0.25
    expirer_interval: float = field(default_factory=lambda: _float("TRIGGER_EXPIRER_INTERVAL", 1.0))
    pool_size: int = 10
    #: base URL clients reach this API at (waitpoint callback URLs are built on it); by
    #: default the address the server listens on, never the request's Host header
    public_url: str | None = field(
        default_factory=lambda: (os.environ.get("TRIGGER_PUBLIC_URL") or "").rstrip("/") or None
    )

    @classmethod
    def from_env(cls) -> Settings:
        url = os.environ.get("DATABASE_URL")
        if not url:
            raise ValueError("DATABASE_URL is not set: point it at the engine's Postgres")
        return cls(database_url=url)
