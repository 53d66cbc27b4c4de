"""Validated inputs of the engine (parsed from the camelCase JSON of the public API)."""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from worker.common.limits import (
    MAX_CONCURRENCY_KEY_LENGTH,
    MAX_DURATION,
    MAX_PRIORITY_SECONDS,
    MAX_QUEUE_NAME_LENGTH,
    MAX_RUN_DURATION_SECONDS,
    LimitError,
    check_metadata,
    check_text,
)
from worker.common.machines import MACHINE_PRESETS

MAX_PAYLOAD_BYTES = 3 * 1024 * 1024
MAX_OUTPUT_BYTES = 10 * 1024 * 1024
MAX_TAGS = 10
MAX_TAG_LENGTH = 128
MAX_BATCH_ITEMS = 1000
DEFAULT_IDEMPOTENCY_TTL = timedelta(days=30)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w)$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | int | float, what: str) -> timedelta:
    """``"90s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1w"`` or a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{what} must not be negative")
        seconds = float(value)
    else:
        match = _DURATION.match(str(value).strip())
        if not match:
            raise ValueError(f"{what} {value!r} is not a duration like '30s', '10m', '2h', '1d'")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    # huge numbers ("99999999999w", 1e20) must be a clear error, not an OverflowError
    if not seconds <= MAX_DURATION.total_seconds():
        raise LimitError(f"{what} {value!r} is longer than the limit of {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def parse_when(value: str | int | float | datetime, what: str) -> datetime:
    """A moment: a datetime, an ISO-8601 timestamp, or a duration from now ("1h", 30)."""
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        if value.year < 1970:  # Postgres holds it, but no run waits that long ago
            raise ValueError(f"{what} {value.isoformat()} is before 1970")
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.now(UTC) + parse_duration(value, what)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _checked_text(value: Any, what: str, max_length: int) -> Any:
    return check_text(value, what, max_length) if isinstance(value, str) else value


class _KeyedOptions(_Camel):
    """The key fields trigger and batch options share, checked once for both."""

    @field_validator("idempotency_key", "parent_run_id", check_fields=False)
    @classmethod
    def _names(cls, value: str | None, info: Any) -> str | None:
        return _checked_text(value, to_camel(info.field_name), 2048)

    @field_validator("idempotency_key_ttl", check_fields=False)
    @classmethod
    def _key_ttl(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_duration(value, "idempotencyKeyTTL")
        return value


class DebounceOptions(_Camel):
    """Repeated triggers with one key push the one delayed run later (docs/triggerdev-semantics.md,
    "Trigger options")."""

    key: str = Field(min_length=1, max_length=512)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_text(value, "debounce.key", 512)
    delay: str | int | float
    mode: Literal["leading", "trailing"] = "leading"
    max_delay: str | int | float | None = None

    @field_validator("delay")
    @classmethod
    def _at_least_a_second(cls, value: str | int | float) -> str | int | float:
        if parse_duration(value, "debounce.delay") < timedelta(seconds=1):
            raise ValueError("debounce.delay must be at least 1s")
        return value


class TriggerOptions(_KeyedOptions):
    """Options of one trigger (docs/triggerdev-semantics.md, "Trigger options")."""

    idempotency_key: str | None = Field(default=None, max_length=2048)
    idempotency_key_ttl: str | int | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "idempotencyKeyTTL", "idempotencyKeyTtl", "idempotency_key_ttl"
        ),
    )
    delay: str | int | float | datetime | None = None

    @field_validator("delay")
    @classmethod
    def _delay(cls, value: Any) -> Any:
        if value is not None:
            parse_when(value, "delay")  # refuse a bad delay at the door, not at insert
        return value

    ttl: str | int | None = None
    tags: list[str] | str | None = None
    priority: float = 0
    queue: str | dict[str, Any] | None = None
    concurrency_key: str | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=250)
    max_duration: float | None = Field(default=None, gt=0)
    machine: str | None = None
    metadata: dict[str, Any] | None = None
    lock_to_version: str | None = Field(
        default=None, validation_alias=AliasChoices("lockToVersion", "version", "lock_to_version")
    )
    parent_run_id: str | None = None
    #: the parent waits for this run (``trigger_and_wait``): a RUN waitpoint is created
    resume_parent_on_completion: bool = False
    #: the parent's journal position for this trigger, so a replay does not trigger again
    journal_seq: int | None = Field(default=None, ge=0)
    #: the parent's attempt journaling it: refused once that attempt has ended
    parent_attempt: int | None = Field(default=None, ge=1)
    test: bool = False
    debounce: DebounceOptions | None = None
    # Sent by Trigger.dev's SDK on every trigger (docs/api.md, "Trigger.dev SDK"): the payload's
    # type (used when the body has no top-level payloadType), its size, the original key and
    # its scope. Accepted; only payload_type changes anything.
    payload_type: str | None = None
    payload_size: int | None = Field(default=None, ge=0)
    idempotency_key_options: dict[str, Any] | None = None
    metadata_type: str | None = None
    region: str | None = None
    external_deployment_id: str | None = None

    @field_validator("concurrency_key", mode="before")
    @classmethod
    def _key_as_text(cls, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, dict | list):
            raise ValueError("concurrencyKey must be a string (or a number)")
        # Trigger.dev coerces keys to strings
        return check_text(str(value), "concurrencyKey", MAX_CONCURRENCY_KEY_LENGTH)

    @field_validator("lock_to_version")
    @classmethod
    def _version(cls, value: str | None, info: Any) -> str | None:
        return _checked_text(value, to_camel(info.field_name), 2048)

    @field_validator("priority")
    @classmethod
    def _priority(cls, value: float) -> float:
        if not -MAX_PRIORITY_SECONDS <= value <= MAX_PRIORITY_SECONDS:
            raise ValueError(
                f"priority is seconds of head start, at most {MAX_PRIORITY_SECONDS:.0f} either way"
            )
        return value

    @field_validator("max_duration")
    @classmethod
    def _max_duration(cls, value: float | None) -> float | None:
        if value is not None and value > MAX_RUN_DURATION_SECONDS:
            raise ValueError(f"maxDuration is at most {MAX_RUN_DURATION_SECONDS:.0f} seconds")
        return value

    @field_validator("queue")
    @classmethod
    def _queue(cls, value: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        name = value.get("name") if isinstance(value, dict) else value
        if isinstance(value, dict) and name is not None and not isinstance(name, str):
            raise ValueError('queue must be a name or {"name": "<queue name>"}')
        if name is not None:
            if not name:
                raise ValueError("queue name must not be empty")
            check_text(name, "queue name", MAX_QUEUE_NAME_LENGTH)
        return value

    @field_validator("machine")
    @classmethod
    def _machine(cls, value: str | None) -> str | None:
        if value is not None and value not in MACHINE_PRESETS:
            raise ValueError(f"machine {value[:64]!r} is not one of {sorted(MACHINE_PRESETS)}")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_metadata(value)  # the same rule and 256 KiB as the metadata PUT
        return value

    @field_validator("ttl")
    @classmethod
    def _ttl(cls, value: str | int | None) -> str | int | None:
        if value is not None and value != 0 and parse_duration(value, "ttl") < timedelta(seconds=1):
            raise ValueError("ttl must be at least 1s (or 0 to disable)")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | str | None) -> list[str]:
        tags = [value] if isinstance(value, str) else list(value or [])
        if len(tags) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags per run, got {len(tags)}")
        for tag in tags:
            if not 1 <= len(tag) <= MAX_TAG_LENGTH:
                raise ValueError(f"each tag must be 1..{MAX_TAG_LENGTH} characters")
            check_text(tag, "a tag", MAX_TAG_LENGTH)
        return tags

    def queue_name(self) -> str | None:
        if isinstance(self.queue, dict):
            return self.queue.get("name")
        return self.queue

    def run_at(self) -> datetime | None:
        """When a delayed run should start, or None to queue it now."""
        if self.delay is None:
            return None
        when = parse_when(self.delay, "delay")
        return when if when > datetime.now(UTC) else None

    def idempotency_expiry(self) -> datetime | None:
        if self.idempotency_key is None:
            return None
        ttl = (
            parse_duration(self.idempotency_key_ttl, "idempotencyKeyTTL")
            if self.idempotency_key_ttl is not None
            else DEFAULT_IDEMPOTENCY_TTL
        )
        return datetime.now(UTC) + ttl


class TriggerBody(_Camel):
    """``POST /api/v1/tasks/{task_id}/trigger``: ``payload`` is any JSON; with ``payloadType``
    other than ``application/json`` it is the serialised text (e.g. application/super+json).
    Trigger.dev's SDK puts ``payloadType`` in ``options``; it means the same."""

    payload: Any = None
    payload_type: str | None = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)
    context: Any = None

    @model_validator(mode="after")
    def _options_payload_type(self) -> TriggerBody:
        if self.payload_type is None and self.options.payload_type is not None:
            self.payload_type = self.options.payload_type
        _no_store(self.payload_type)
        return self


class BatchItem(_Camel):
    task: str | None = None
    payload: Any = None
    payload_type: str | None = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)

    @model_validator(mode="after")
    def _options_payload_type(self) -> BatchItem:
        if self.payload_type is None and self.options.payload_type is not None:
            self.payload_type = self.options.payload_type
        _no_store(self.payload_type)
        return self


def _no_store(payload_type: str | None) -> None:
    if payload_type == "application/store":
        raise ValueError(
            "payloads offloaded to object storage (application/store) are not supported: "
            "keep Trigger.dev SDK payloads under 512 KB so they are sent inline"
        )


class BatchOptions(_KeyedOptions):
    parent_run_id: str | None = None
    resume_parent_on_completion: bool = False
    journal_seq: int | None = Field(default=None, ge=0)
    parent_attempt: int | None = Field(default=None, ge=1)
    idempotency_key: str | None = Field(default=None, max_length=2000)
    idempotency_key_ttl: str | int | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "idempotencyKeyTTL", "idempotencyKeyTtl", "idempotency_key_ttl"
        ),
    )



class BatchBody(_Camel):
    items: list[BatchItem] = Field(min_length=1, max_length=MAX_BATCH_ITEMS)
    options: BatchOptions = Field(default_factory=BatchOptions)

    def expanded_items(self) -> list[BatchItem]:
        """Items with the batch's idempotency key applied as ``<key>-<index>`` where they
        have none of their own (docs/triggerdev-semantics.md, "Idempotency keys")."""
        key = self.options.idempotency_key
        if key is None:
            return self.items
        return [
            item
            if item.options.idempotency_key is not None
            else item.model_copy(
                update={
                    "options": item.options.model_copy(
                        update={
                            "idempotency_key": f"{key}-{index}",
                            "idempotency_key_ttl": self.options.idempotency_key_ttl,
                        }
                    )
                }
            )
            for index, item in enumerate(self.items)
        ]
