"""The camelCase request bodies that create runs (``POST /api/v1/tasks/{id}/trigger``, the
batch routes, the two-phase batch items), validated at the door with messages that say what to
fix. Each converts once, with ``to_spec()``, into the engine's frozen types
(worker/engine/models.py); the engine never sees these."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

from worker.common.limits import (
    MAX_CONCURRENCY_KEY_LENGTH,
    MAX_PRIORITY_SECONDS,
    MAX_QUEUE_NAME_LENGTH,
    MAX_RUN_DURATION_SECONDS,
    check_metadata,
    check_text,
)
from worker.common.machines import MACHINE_PRESETS
from worker.engine.models import (
    MAX_BATCH_ITEMS,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    BatchSpec,
    Debounce,
    DebounceMode,
    ParentLink,
    RunOptions,
    TriggerSpec,
    parse_duration,
    parse_when,
)


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


def _checked_text(value: str | None, what: str, max_length: int) -> str | None:
    return check_text(value, what, max_length) if isinstance(value, str) else value


class _KeyedOptions(_Camel):
    """The key fields trigger and batch options share, checked once for both."""

    @field_validator("idempotency_key", "parent_run_id", check_fields=False)
    @classmethod
    def _names(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _checked_text(value, to_camel(info.field_name or ""), 2048)

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
    delay: str | int | float
    mode: Literal["leading", "trailing"] = "leading"
    max_delay: str | int | float | None = None

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return check_text(value, "debounce.key", 512)

    @field_validator("delay")
    @classmethod
    def _at_least_a_second(cls, value: str | int | float) -> str | int | float:
        if parse_duration(value, "debounce.delay") < timedelta(seconds=1):
            raise ValueError("debounce.delay must be at least 1s")
        return value

    @field_validator("max_delay")
    @classmethod
    def _max_delay(cls, value: str | int | float | None) -> str | int | float | None:
        if value is not None:  # refused at the door, not as a failure at insert
            parse_duration(value, "debounce.maxDelay")
        return value

    def to_spec(self) -> Debounce:
        max_delay = self.max_delay
        return Debounce(
            self.key,
            parse_duration(self.delay, "debounce.delay"),
            DebounceMode(self.mode),
            parse_duration(max_delay, "debounce.maxDelay") if max_delay is not None else None,
        )


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
    def _delay(
        cls, value: str | int | float | datetime | None
    ) -> str | int | float | datetime | None:
        if value is not None:
            parse_when(value, "delay")  # refuse a bad delay at the door, not at insert
        return value

    ttl: str | int | None = None
    tags: list[str] | str | None = None
    priority: float = 0
    queue: str | dict[str, object] | None = None
    concurrency_key: str | None = None
    max_attempts: int | None = Field(default=None, ge=1, le=250)
    max_duration: float | None = Field(default=None, gt=0)
    machine: str | None = None
    metadata: dict[str, object] | None = None
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
    idempotency_key_options: dict[str, object] | None = None
    metadata_type: str | None = None
    region: str | None = None
    external_deployment_id: str | None = None

    @field_validator("concurrency_key", mode="before")
    @classmethod
    def _key_as_text(cls, value: object) -> str | None:
        if value is None:
            return None
        if isinstance(value, dict | list):
            raise ValueError("concurrencyKey must be a string (or a number)")
        # Trigger.dev coerces keys to strings
        return check_text(str(value), "concurrencyKey", MAX_CONCURRENCY_KEY_LENGTH)

    @field_validator("lock_to_version")
    @classmethod
    def _version(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _checked_text(value, to_camel(info.field_name or ""), 2048)

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
    def _queue(cls, value: str | dict[str, object] | None) -> str | dict[str, object] | None:
        name = _queue_name(value)
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
    def _metadata(cls, value: dict[str, object] | None) -> dict[str, object] | None:
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

    def to_spec(self) -> RunOptions:
        return RunOptions(
            idempotency_key=self.idempotency_key,
            idempotency_key_ttl=_ttl_of_key(self.idempotency_key_ttl),
            delay_until=parse_when(self.delay, "delay") if self.delay is not None else None,
            ttl=parse_duration(self.ttl, "ttl") if self.ttl is not None else None,
            tags=tuple(self.tags or ()),
            priority=self.priority,
            queue=_queue_name(self.queue),
            concurrency_key=self.concurrency_key,
            max_attempts=self.max_attempts,
            max_duration=self.max_duration,
            machine=self.machine,
            metadata=self.metadata,
            lock_to_version=self.lock_to_version,
            parent=ParentLink(
                self.parent_run_id,
                self.resume_parent_on_completion,
                self.journal_seq,
                self.parent_attempt,
            ),
            test=self.test,
            debounce=self.debounce.to_spec() if self.debounce is not None else None,
        )


def _queue_name(queue: str | dict[str, object] | None) -> str | None:
    """``"name"`` or ``{"name": "name"}`` (Trigger.dev's SDK sends the object)."""
    if not isinstance(queue, dict):
        return queue
    name = queue.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError('queue must be a name or {"name": "<queue name>"}')
    return name


def _ttl_of_key(value: str | int | None) -> timedelta | None:
    return parse_duration(value, "idempotencyKeyTTL") if value is not None else None


class TriggerBody(_Camel):
    """``POST /api/v1/tasks/{task_id}/trigger``: ``payload`` is any JSON; with ``payloadType``
    other than ``application/json`` it is the serialised text (e.g. application/super+json).
    Trigger.dev's SDK puts ``payloadType`` in ``options``; it means the same."""

    payload: object = None
    payload_type: str | None = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)
    context: object = None

    @model_validator(mode="after")
    def _options_payload_type(self) -> TriggerBody:
        self.payload_type = _payload_type(self.payload_type, self.options)
        return self

    def to_spec(self, task_id: str) -> TriggerSpec:
        return TriggerSpec(task_id, self.payload, self.payload_type, self.options.to_spec())


class BatchItem(_Camel):
    task: str | None = None
    payload: object = None
    payload_type: str | None = None
    options: TriggerOptions = Field(default_factory=TriggerOptions)

    @model_validator(mode="after")
    def _options_payload_type(self) -> BatchItem:
        self.payload_type = _payload_type(self.payload_type, self.options)
        return self

    def to_spec(self, task_id: str | None = None) -> TriggerSpec:
        """``task_id``: the task of a batch of one task (the path names it)."""
        task = task_id or self.task or ""
        return TriggerSpec(task, self.payload, self.payload_type, self.options.to_spec())


def _payload_type(payload_type: str | None, options: TriggerOptions) -> str | None:
    """The body's ``payloadType``, else the one Trigger.dev's SDK puts in ``options``."""
    chosen = payload_type if payload_type is not None else options.payload_type
    if chosen == "application/store":
        raise ValueError(
            "payloads offloaded to object storage (application/store) are not supported: "
            "keep Trigger.dev SDK payloads under 512 KB so they are sent inline"
        )
    return chosen


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

    def to_spec(self, task_id: str | None = None) -> BatchSpec:
        options = self.options
        return BatchSpec(
            tuple(item.to_spec(task_id) for item in self.items),
            ParentLink(
                options.parent_run_id,
                options.resume_parent_on_completion,
                options.journal_seq,
                options.parent_attempt,
            ),
            options.idempotency_key,
            _ttl_of_key(options.idempotency_key_ttl),
        )
