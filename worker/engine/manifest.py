"""A worker's task manifest, checked before it is stored (``/engine/v1/worker/register``).

Task definitions are read again at every dequeue (queue, retry, max_duration, machine): a
wrong type stored here would fail the dequeue of every run of the environment, so each field
the engine reads is checked now, with a message naming the task. Other fields pass through.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from worker.common.limits import (
    MAX_QUEUE_NAME_LENGTH,
    MAX_RETRY_DELAY_MS,
    MAX_RUN_DURATION_SECONDS,
    LimitError,
    check_json,
    check_text,
)
from worker.common.machines import MACHINE_PRESETS
from worker.engine.errors import EngineError
from worker.engine.models import parse_duration


class _Open(BaseModel):
    # strict: a "3" stored for a number would break the engine's reads of it later
    model_config = ConfigDict(extra="allow", strict=True)


def _machine(value: str | None) -> str | None:
    if value is not None and value not in MACHINE_PRESETS:
        raise ValueError(f"machine {value[:64]!r} is not one of {sorted(MACHINE_PRESETS)}")
    return value


class QueueDefinition(_Open):
    name: str | None = Field(default=None, min_length=1, max_length=MAX_QUEUE_NAME_LENGTH)
    concurrency_limit: int | None = Field(default=None, ge=0, le=100_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_text(value, "queue name")


class OutOfMemory(_Open):
    machine: str | None = None
    _check = field_validator("machine")(_machine)


class RetryDefinition(_Open):
    max_attempts: int | None = Field(default=None, ge=0, le=10_000)
    factor: float | None = Field(default=None, ge=0, le=100)
    min_timeout_ms: float | None = Field(default=None, ge=0, le=MAX_RETRY_DELAY_MS)
    max_timeout_ms: float | None = Field(default=None, ge=0, le=MAX_RETRY_DELAY_MS)
    randomize: bool | None = None
    out_of_memory: OutOfMemory | None = None


class TaskDefinition(_Open):
    id: str = Field(min_length=1, max_length=256)
    queue: QueueDefinition | None = None
    retry: RetryDefinition | None = None
    max_duration: float | None = Field(default=None, gt=0, le=MAX_RUN_DURATION_SECONDS)
    machine: str | None = None
    ttl: str | int | None = None

    _machine = field_validator("machine")(_machine)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return check_text(value, "task id", 256)

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | int | None) -> str | int | None:
        if value is not None and value != 0:
            parse_duration(value, "ttl")
        return value


def check_manifest(tasks: list[Any]) -> None:
    """Refuse a manifest whose definitions the engine could not use, saying which and why."""
    for index, definition in enumerate(tasks):
        name = definition.get("id") if isinstance(definition, dict) else None
        label = f"task {name!r}" if isinstance(name, str) else f"task #{index}"
        try:
            TaskDefinition.model_validate(definition)
            check_json(definition, "its definition")
        except LimitError as exc:
            raise EngineError(f"{label}: {exc.message}") from None
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'definition'}: {err['msg']}"
                for err in exc.errors()
            )
            raise EngineError(f"{label} in the manifest is invalid: {problems}") from None
