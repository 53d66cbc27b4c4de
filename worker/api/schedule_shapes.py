"""The schedule on the wire (Trigger.dev's camelCase): the request body and the object."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.alias_generators import to_camel

from worker.common.limits import check_text
from worker.engine.schedules import Schedule, SchedulePage, ScheduleSpec


class ScheduleBody(BaseModel):
    """``POST /api/v1/schedules`` and ``PUT /api/v1/schedules/{id}`` (camelCase on the wire)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    task: str = Field(min_length=1)
    cron: str = Field(min_length=1)
    deduplication_key: str | None = Field(default=None, min_length=1, max_length=2048)
    external_id: str | None = Field(default=None, max_length=2048)
    timezone: str = "UTC"

    @field_validator("task", "cron", "deduplication_key", "external_id", "timezone")
    @classmethod
    def _text(cls, value: str | None, info: ValidationInfo) -> str | None:
        return None if value is None else check_text(value, to_camel(info.field_name or ""))

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(self.task, self.cron, self.deduplication_key, self.external_id,
                            self.timezone)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def present(schedule: Schedule, now: datetime | None = None) -> dict[str, object]:
    """The schedule object of Trigger.dev's API."""
    return {
        "id": schedule.id,
        "type": schedule.type,
        "task": schedule.task_id,
        "active": schedule.active,
        "deduplicationKey": schedule.deduplication_key,
        "externalId": schedule.external_id,
        "generator": {"type": "CRON", "expression": schedule.cron,
                      "description": schedule.cron},
        "timezone": schedule.timezone,
        "nextRun": _iso(schedule.next_run_at),
        "lastRun": _iso(schedule.last_run_at),
        "upcoming": [t.isoformat() for t in schedule.upcoming(now)],
        "environments": [],
        "createdAt": schedule.created_at.isoformat(),
        "updatedAt": schedule.updated_at.isoformat(),
    }


def present_page(page: SchedulePage) -> dict[str, object]:
    return {
        "data": [present(s) for s in page.schedules],
        "pagination": {"currentPage": page.page, "totalPages": page.total_pages,
                       "count": page.count},
    }
