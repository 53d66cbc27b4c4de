"""The pydantic models behind :mod:`worker.sdk.config`: a config value that is not already of its
field's type (one to coerce, a bad one, an unknown key) is validated by them, with their
messages. Imported only then: the usual ``trigger_config.py`` never loads pydantic's model
machinery (docs/cold-start.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from worker.sdk.config_checks import (
    debian_names,
    exporters,
    instrumentors,
    known_machine,
    relative,
    requirements,
    retry_default,
)


class RetriesModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled_in_dev: bool = True
    default: dict[str, Any] | None = None

    @field_validator("default")
    @classmethod
    def _default(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return retry_default(value)


class BuildModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    system_packages: list[str] = Field(default_factory=list)
    pip_packages: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list)
    base_image: str = "python:3.11-slim"
    worker_requirement: str = "trigger-worker"

    @field_validator("system_packages")
    @classmethod
    def _debian(cls, value: list[str]) -> list[str]:
        return debian_names(value)

    @field_validator("pip_packages", "worker_requirement")
    @classmethod
    def _pip(cls, value: str | list[str]) -> str | list[str]:
        return requirements(value)

    @field_validator("files")
    @classmethod
    def _files(cls, value: list[str]) -> list[str]:
        return relative(value)


class TelemetryModel(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    instrumentations: list[Any] = Field(default_factory=list)
    exporters: list[Any] = Field(default_factory=list)
    log_exporters: list[Any] = Field(default_factory=list)
    resource: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True

    @field_validator("instrumentations")
    @classmethod
    def _instrumentors(cls, value: list[Any]) -> list[Any]:
        return instrumentors(value)

    @field_validator("exporters", "log_exporters")
    @classmethod
    def _exporters(cls, value: list[Any]) -> list[Any]:
        return exporters(value)


Hook = Callable[..., object] | None


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    project: str = Field(min_length=1)
    dirs: list[str] = Field(default_factory=lambda: ["trigger"])
    max_duration: float = Field(default=3600, ge=5)
    retries: RetriesModel = Field(default_factory=RetriesModel)
    machine: str = "small-1x"
    log_level: Literal["debug", "info", "log", "warn", "error", "none"] = "info"
    ttl: str | int | None = None
    concurrency: int = Field(default=10, ge=1, le=1000)
    max_runs_per_process: int = Field(default=1000, ge=1)
    max_memory_per_process: int | None = Field(default=None, description="MiB of RSS")
    build: BuildModel = Field(default_factory=BuildModel)
    telemetry: TelemetryModel = Field(default_factory=TelemetryModel)
    init: Hook = None
    on_start: Hook = None
    on_start_attempt: Hook = None
    on_success: Hook = None
    on_failure: Hook = None
    on_complete: Hook = None
    cleanup: Hook = None
    catch_error: Hook = None
    middleware: Hook = None
    on_cancel: Hook = None

    @field_validator("machine")
    @classmethod
    def _machine(cls, value: str) -> str:
        return known_machine(value)


#: the plain class's name → the pydantic model that validates what it does not take directly
MODELS: dict[str, Any] = {"Config": ConfigModel, "RetriesConfig": RetriesModel,
                          "BuildConfig": BuildModel, "TelemetryConfig": TelemetryModel}
