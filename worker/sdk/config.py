"""``define_config``: the project configuration read from ``trigger_config.py``.

Validated by pydantic so that a bad key fails with a message naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.common.machines import MACHINE_PRESETS
from worker.sdk.definitions import TaskDefinitionError
from worker.sdk.global_hooks import combined
from worker.sdk.task import HOOK_NAMES, normalize_hooks, normalize_retry


class ConfigError(ValueError):
    """``trigger_config.py`` is invalid; the message names the key and what to fix."""


class RetriesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled_in_dev: bool = True
    default: dict[str, Any] | None = None

    @field_validator("default")
    @classmethod
    def _known_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        try:
            return normalize_retry(value, "retries.default")
        except TaskDefinitionError as exc:
            raise ValueError(str(exc)) from None


class BuildConfig(BaseModel):
    """``build``: what ``trigger deploy`` puts in the worker image (the Python answer to
    Trigger.dev's ``aptGet`` / ``ffmpeg`` / ``additionalFiles`` / ``additionalPackages``
    extensions). See worker/dockerfile.py."""

    model_config = ConfigDict(extra="forbid")

    #: Debian packages (``apt-get install``), e.g. ``["ffmpeg", "libpq5"]``
    system_packages: list[str] = Field(default_factory=list)
    #: pip requirement specifiers, e.g. ``["httpx>=0.27", "pandas==2.2.2"]``
    pip_packages: list[str] = Field(default_factory=list)
    #: files or folders (relative to the project) copied beside the task dirs
    files: list[str] = Field(default_factory=list)
    #: the base image
    base_image: str = "python:3.11-slim"
    #: how the image gets trigger-worker itself (a pip requirement)
    worker_requirement: str = "trigger-worker"

    @field_validator("system_packages")
    @classmethod
    def _debian_names(cls, value: list[str]) -> list[str]:
        bad = [p for p in value if not re.fullmatch(r"[a-z0-9][a-z0-9+.\-]*(=[\w.+:~-]+)?", p)]
        if bad:
            raise ValueError(f"not Debian package names: {bad}")
        return value

    @field_validator("pip_packages", "worker_requirement")
    @classmethod
    def _requirements(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        bad = [p for p in items if not p or any(c in p for c in "\n\r\"'`$;&|")]
        if bad:
            raise ValueError(f"not pip requirement specifiers: {bad}")
        return value

    @field_validator("files")
    @classmethod
    def _relative(cls, value: list[str]) -> list[str]:
        bad = [f for f in value if not f or f.startswith("/") or ".." in f.split("/")]
        if bad:
            raise ValueError(f"build files must be paths inside the project: {bad}")
        return value


class TelemetryConfig(BaseModel):
    """``telemetry``: the snake_case twin of Trigger.dev's config key (docs/api.md, "Traces").

    Set up in each executor after the fork (worker/runtime/telemetry.py), never in the zygote.
    """

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    #: instrumentor objects (``HTTPXClientInstrumentor()``, ``PsycopgInstrumentor()``, ...):
    #: their ``instrument()`` is called in each executor
    instrumentations: list[Any] = Field(default_factory=list)
    #: extra span exporters (get the same spans as the API)
    exporters: list[Any] = Field(default_factory=list)
    #: log record exporters (``logger.*`` and ``print`` as OpenTelemetry log records)
    log_exporters: list[Any] = Field(default_factory=list)
    #: extra resource attributes of every span
    resource: dict[str, Any] = Field(default_factory=dict)
    #: False turns tracing off (so does ``TRIGGER_TELEMETRY=off`` in the worker's environment)
    enabled: bool = True

    @field_validator("instrumentations")
    @classmethod
    def _instrumentors(cls, value: list[Any]) -> list[Any]:
        bad = [type(i).__name__ for i in value if not callable(getattr(i, "instrument", None))]
        if bad:
            raise ValueError(f"not instrumentors (no instrument() method): {bad}")
        return value

    @field_validator("exporters", "log_exporters")
    @classmethod
    def _exporters(cls, value: list[Any]) -> list[Any]:
        bad = [type(e).__name__ for e in value if not callable(getattr(e, "export", None))]
        if bad:
            raise ValueError(f"not exporters (no export() method): {bad}")
        return value


class Config(BaseModel):
    """The validated project configuration."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    project: str = Field(min_length=1)
    dirs: list[str] = Field(default_factory=lambda: ["trigger"])
    max_duration: float = Field(default=3600, ge=5)
    retries: RetriesConfig = Field(default_factory=RetriesConfig)
    machine: str = "small-1x"
    log_level: Literal["debug", "info", "log", "warn", "error", "none"] = "info"
    ttl: str | int | None = None
    #: runs at once per worker replica (one executor each)
    concurrency: int = Field(default=10, ge=1, le=1000)
    max_runs_per_process: int = Field(default=1000, ge=1)
    max_memory_per_process: int | None = Field(default=None, description="MiB of RSS")
    build: BuildConfig = Field(default_factory=BuildConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)
    # global hooks
    init: Callable[..., object] | None = None
    on_start: Callable[..., object] | None = None
    on_start_attempt: Callable[..., object] | None = None
    on_success: Callable[..., object] | None = None
    on_failure: Callable[..., object] | None = None
    on_complete: Callable[..., object] | None = None
    cleanup: Callable[..., object] | None = None
    catch_error: Callable[..., object] | None = None
    middleware: Callable[..., object] | None = None
    on_cancel: Callable[..., object] | None = None

    @field_validator("machine")
    @classmethod
    def _known_machine(cls, value: str) -> str:
        if value not in MACHINE_PRESETS:
            raise ValueError(f"unknown machine {value!r}; one of {sorted(MACHINE_PRESETS)}")
        return value

    def global_hooks(self) -> dict[str, Callable[..., object]]:
        """The config's hooks, each combined with those registered with ``tasks.on_*``
        (worker/sdk/global_hooks.py)."""
        found = {n: combined(n, getattr(self, n, None)) for n in HOOK_NAMES}
        return {n: h for n, h in found.items() if h is not None}


GLOBAL_HOOKS = (
    "init",
    "on_start",
    "on_start_attempt",
    "on_success",
    "on_failure",
    "on_complete",
    "cleanup",
    "catch_error",
    "middleware",
    "on_cancel",
)


#: Trigger.dev's config keys spelled differently here (its literal twin → our key)
CONFIG_TWINS = {"default_machine": "machine"}


def define_config(**options: Any) -> Config:
    """Validate the project's options; raise :class:`ConfigError` naming every bad key.

    Trigger.dev's literal spellings are accepted too: ``default_machine`` (= ``machine``) and
    the hook ``handle_error`` (= ``catch_error``). Hooks are checked as task hooks are
    (worker/sdk/hook_signatures.py): one that cannot be called is refused here.
    """
    for twin, key in CONFIG_TWINS.items():
        if twin in options:
            if key in options:
                raise ConfigError(f"invalid trigger config: give {key} or {twin}, not both")
            options[key] = options.pop(twin)
    hook_options = {k: options.pop(k) for k in list(options)
                    if k in GLOBAL_HOOKS or k == "handle_error"}
    try:
        options.update(normalize_hooks(hook_options, "trigger config"))
    except TaskDefinitionError as exc:
        raise ConfigError(f"invalid trigger config: {exc}") from None
    try:
        return Config(**options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<config>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid trigger config: {problems}") from None
