"""The runs the API reports: :class:`Run` (snake_case attributes, timestamps as ``datetime``,
``payload``/``output`` decoded with the serialiser, so a datetime returned by a task comes back a
datetime) and :class:`RunPage`. Apart from the ``runs`` facade (worker/sdk/runs.py) so that
realtime, which yields runs, and runs, which subscribes through realtime, share them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from worker.common.serialization import JSON, loads
from worker.common.statuses import API_FINAL_STATUSES
from worker.sdk.pagination import Page

QUEUED_STATUSES = frozenset({"QUEUED", "PENDING_VERSION", "DELAYED"})
EXECUTING_STATUSES = frozenset({"EXECUTING", "DEQUEUED"})
FAILED_STATUSES = frozenset({"FAILED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"})


def _time(value: object) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def _decode(data: dict[str, Any], key: str) -> Any:
    value = data.get(key)
    data_type = data.get(f"{key}Type") or JSON
    raw = data.get(f"raw{key.capitalize()}")  # the typed packet beside its JSON view
    if isinstance(raw, str) and data_type != JSON:
        return loads(raw, data_type)
    if data_type == JSON or not isinstance(value, str):
        return value
    return loads(value, data_type)


@dataclass
class Run:
    """A run as the API reports it. ``raw`` keeps the whole camelCase object."""

    id: str
    status: str
    task_identifier: str
    payload: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    attempt_count: int = 0
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None
    version: str | None = None
    is_test: bool = False
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    delayed_until: dt.datetime | None = None
    expired_at: dt.datetime | None = None
    ttl: str | None = None
    batch_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Run:
        return cls(
            id=data["id"],
            status=data["status"],
            task_identifier=data.get("taskIdentifier", ""),
            payload=_decode(data, "payload"),
            output=_decode(data, "output"),
            error=data.get("error"),
            attempt_count=int(data.get("attemptCount") or 0),
            tags=list(data.get("tags") or []),
            metadata=data.get("metadata"),
            idempotency_key=data.get("idempotencyKey"),
            version=data.get("version"),
            is_test=bool(data.get("isTest", False)),
            created_at=_time(data.get("createdAt")),
            updated_at=_time(data.get("updatedAt")),
            started_at=_time(data.get("startedAt")),
            finished_at=_time(data.get("finishedAt")),
            delayed_until=_time(data.get("delayedUntil")),
            expired_at=_time(data.get("expiredAt")),
            ttl=data.get("ttl"),
            batch_id=(data.get("batch") or {}).get("id") or data.get("batchId"),
            raw=data,
        )

    @property
    def is_queued(self) -> bool:
        return self.status in QUEUED_STATUSES

    @property
    def is_executing(self) -> bool:
        return self.status in EXECUTING_STATUSES

    @property
    def is_waiting(self) -> bool:
        return self.status == "WAITING"

    @property
    def is_completed(self) -> bool:
        return self.status in API_FINAL_STATUSES

    @property
    def is_success(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def is_failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def is_canceled(self) -> bool:
        return self.status == "CANCELED"


class RunPage(Page[Run]):
    """One page of :meth:`Runs.list`; ``next_cursor`` is None on the last page."""

    @property
    def next_cursor(self) -> str | None:
        return str(self.next) if self.next is not None else None
