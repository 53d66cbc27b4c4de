"""The SDK's configuration from the environment, through worker/common/settings.py's readers.

Read when used (a process may set ``TRIGGER_*`` after ``import worker``); a value that is set
but unusable raises :class:`~worker.common.settings.SettingsError` naming the variable.
:func:`worker.configure` overrides the API URL and secret key (worker/sdk/transport.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from worker.common.settings import env_float, env_str

DEFAULT_API_URL = "http://localhost:3030"


@dataclass(frozen=True)
class SdkSettings:
    #: ``TRIGGER_API_URL``: one URL, or several API replicas comma-separated (failover)
    api_url: str
    #: ``TRIGGER_SECRET_KEY`` (``tr_dev_…``); None when unset
    secret_key: str | None
    #: ``TRIGGER_CHECKPOINT_AFTER``: seconds a wait is held in place before the run checkpoints
    checkpoint_after: float
    #: ``TRIGGER_RUN_METADATA_FLUSH_INTERVAL`` (ms in the environment): seconds between flushes
    metadata_flush_interval: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SdkSettings:
        flush_ms = env_float("TRIGGER_RUN_METADATA_FLUSH_INTERVAL", 1000.0, minimum=0.0,
                             environ=environ)
        return cls(
            api_url=env_str("TRIGGER_API_URL", DEFAULT_API_URL, environ=environ) or DEFAULT_API_URL,
            secret_key=env_str("TRIGGER_SECRET_KEY", environ=environ),
            checkpoint_after=env_float("TRIGGER_CHECKPOINT_AFTER", 10.0, minimum=0.0,
                                       environ=environ),
            metadata_flush_interval=max(0.05, flush_ms / 1000),
        )


def sdk_settings() -> SdkSettings:
    return SdkSettings.from_env()


def api_urls(api_url: str) -> list[str]:
    """The API URLs a comma-separated ``TRIGGER_API_URL`` lists, in order."""
    urls = [u.strip().rstrip("/") for u in api_url.split(",") if u.strip()]
    if not urls:
        raise ValueError("no API URL given (TRIGGER_API_URL)")
    return urls
