"""What the engine needs to create runs: frozen, snake_case, already validated.

The camelCase request bodies that carry them over HTTP live in ``worker/api/run_bodies.py``
(each with one ``to_spec()``); the cron service builds these directly. The limits and the
duration/moment parsing stay here: they are the engine's rules, whoever calls it."""

from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from worker.common.limits import MAX_DURATION, LimitError

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




class DebounceMode(StrEnum):
    """Which trigger's payload and options the debounced run keeps."""

    leading = "leading"
    trailing = "trailing"


@dataclass(frozen=True, slots=True)
class Debounce:
    """Repeated triggers with one key push the one delayed run later (docs/triggerdev-semantics.md,
    "Trigger options")."""

    key: str
    delay: timedelta
    mode: DebounceMode = DebounceMode.leading
    max_delay: timedelta | None = None


@dataclass(frozen=True, slots=True)
class ParentLink:
    """A child trigger made from inside a run: its parent, whether the parent waits for it
    (``*_and_wait``: a RUN or BATCH waitpoint) and its place in the parent's journal."""

    run_id: str | None = None
    resume_on_completion: bool = False
    #: the parent's journal position for this trigger, so a replay does not trigger again
    journal_seq: int | None = None
    #: the parent's attempt journaling it: refused once that attempt has ended
    attempt: int | None = None

    @property
    def journaled(self) -> bool:
        return self.resume_on_completion or self.journal_seq is not None

    @property
    def links(self) -> bool:
        """Anything here would touch the parent (a public token may not)."""
        return self.run_id is not None or self.journaled


@dataclass(frozen=True, slots=True)
class RunOptions:
    """Options of one trigger (docs/triggerdev-semantics.md, "Trigger options")."""

    idempotency_key: str | None = None
    #: None: DEFAULT_IDEMPOTENCY_TTL
    idempotency_key_ttl: timedelta | None = None
    #: a delayed run starts then (a moment already past queues it now)
    delay_until: datetime | None = None
    #: None: the task's own ttl; zero: never expires
    ttl: timedelta | None = None
    tags: tuple[str, ...] = ()
    #: seconds of head start in the queue
    priority: float = 0
    queue: str | None = None
    concurrency_key: str | None = None
    max_attempts: int | None = None
    max_duration: float | None = None
    machine: str | None = None
    metadata: dict[str, object] | None = None
    lock_to_version: str | None = None
    parent: ParentLink = field(default_factory=ParentLink)
    test: bool = False
    debounce: Debounce | None = None

    def run_at(self) -> datetime | None:
        """When a delayed run should start, or None to queue it now."""
        when = self.delay_until
        return when if when is not None and when > datetime.now(UTC) else None

    def idempotency_expiry(self) -> datetime | None:
        if self.idempotency_key is None:
            return None
        return datetime.now(UTC) + (self.idempotency_key_ttl or DEFAULT_IDEMPOTENCY_TTL)


@dataclass(frozen=True, slots=True)
class TriggerSpec:
    """One run to create: ``payload`` is any JSON value, or the serialised text when
    ``payload_type`` is not ``application/json`` (e.g. application/super+json)."""

    task: str
    payload: object = None
    payload_type: str | None = None
    options: RunOptions = field(default_factory=RunOptions)


@dataclass(frozen=True, slots=True)
class BatchSpec:
    """Runs created together, possibly of several tasks; the batch's idempotency key scopes
    each item's."""

    items: tuple[TriggerSpec, ...]
    parent: ParentLink = field(default_factory=ParentLink)
    idempotency_key: str | None = None
    idempotency_key_ttl: timedelta | None = None

    def parents(self) -> tuple[ParentLink, ...]:
        """The batch's link to its parent and each item's."""
        return (self.parent, *(item.options.parent for item in self.items))

    def expanded_items(self) -> tuple[TriggerSpec, ...]:
        """Items with the batch's idempotency key applied as ``<key>-<index>`` where they
        have none of their own (docs/triggerdev-semantics.md, "Idempotency keys")."""
        key = self.idempotency_key
        if key is None:
            return self.items
        return tuple(
            item
            if item.options.idempotency_key is not None
            else replace(
                item,
                options=replace(
                    item.options,
                    idempotency_key=f"{key}-{index}",
                    idempotency_key_ttl=self.idempotency_key_ttl,
                ),
            )
            for index, item in enumerate(self.items)
        )
