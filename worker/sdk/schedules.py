"""``schedules``: scheduled tasks (declarative cron) and the imperative schedules API.

Declarative::

    @schedules.task(id="nightly", cron={"pattern": "0 2 * * *", "timezone": "Europe/Paris"})
    async def nightly(payload: ScheduledPayload, ctx) -> None:
        print(payload.timestamp, payload.last_timestamp, payload.upcoming)

The schedule is created when a worker with this task registers, updated when the cron changes
and deleted when the task (or its ``cron``) goes away. Imperative::

    s = await schedules.create(task="nightly", cron="0 * * * *", deduplication_key="user-1",
                               timezone="America/New_York", external_id="user-1")
    async for s in schedules.list(): ...        # every page; await schedules.list() is one
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.sdk import transport
from worker.sdk.definitions import TaskDefinitionError
from worker.sdk.pagination import Page, PageList
from worker.sdk.task import Task, _build, _caller_source
from worker.sdk.transport import path_segment

_ENVIRONMENTS = frozenset({"PRODUCTION", "STAGING", "PREVIEW", "DEVELOPMENT"})


def _time(value: object) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if isinstance(value, str) and value else None


@dataclass(frozen=True)
class ScheduledPayload:
    """What a scheduled task receives. Times are aware datetimes (UTC); ``timestamp`` is the
    nominal tick, even when the run is late (see the missed-tick policy in the README)."""

    timestamp: dt.datetime
    last_timestamp: dt.datetime | None = None
    timezone: str = "UTC"
    schedule_id: str | None = None
    external_id: str | None = None
    upcoming: list[dt.datetime] = field(default_factory=list)
    type: str | None = None

    @classmethod
    def model_validate(cls, data: object) -> ScheduledPayload:
        """Parse the wire payload (camelCase, ISO text). A manual trigger may send ``{}``:
        ``timestamp`` then defaults to now."""
        if isinstance(data, ScheduledPayload):
            return data
        data = data if isinstance(data, dict) else {}
        upcoming = [t for t in (_time(v) for v in data.get("upcoming") or []) if t]
        return cls(
            timestamp=_time(data.get("timestamp")) or dt.datetime.now(dt.UTC),
            last_timestamp=_time(data.get("lastTimestamp")),
            timezone=data.get("timezone") or "UTC",
            schedule_id=data.get("scheduleId"),
            external_id=data.get("externalId"),
            upcoming=upcoming,
            type=data.get("type"),
        )

    @classmethod
    def model_json_schema(cls) -> None:
        """No trigger-time schema check for scheduled tasks (any payload may be tested)."""
        return None


def _normalise_cron(task_id: str, cron: object) -> dict[str, Any] | None:
    if cron is None:
        return None
    if isinstance(cron, str):
        cron = {"pattern": cron}
    if not isinstance(cron, dict) or not isinstance(cron.get("pattern"), str):
        raise TaskDefinitionError(
            f"schedules.task {task_id!r}: cron must be a pattern string or "
            '{"pattern": "0 * * * *", "timezone": "Europe/Paris"}'
        )
    unknown = set(cron) - {"pattern", "timezone", "environments"}
    if unknown:
        raise TaskDefinitionError(
            f"schedules.task {task_id!r}: unknown cron option(s) {sorted(unknown)}"
        )
    if len(cron["pattern"].split()) != 5 and not cron["pattern"].startswith("@"):
        raise TaskDefinitionError(
            f"schedules.task {task_id!r}: cron {cron['pattern']!r} must have 5 fields "
            "(minute hour day-of-month month day-of-week)"
        )
    envs = cron.get("environments")
    if envs is not None and not set(envs) <= _ENVIRONMENTS:
        raise TaskDefinitionError(
            f"schedules.task {task_id!r}: environments must be among {sorted(_ENVIRONMENTS)}"
        )
    return {
        "pattern": cron["pattern"],
        "timezone": cron.get("timezone") or "UTC",
        "environments": list(envs) if envs else None,
    }


@dataclass
class Schedule:
    """A schedule as ``/api/v1/schedules`` reports it."""

    id: str
    task: str
    type: str
    active: bool
    cron: str
    timezone: str
    deduplication_key: str | None = None
    external_id: str | None = None
    next_run: dt.datetime | None = None
    last_run: dt.datetime | None = None
    upcoming: list[dt.datetime] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Schedule:
        return cls(
            id=data["id"],
            task=data["task"],
            type=data.get("type", ""),
            active=bool(data.get("active")),
            cron=(data.get("generator") or {}).get("expression", ""),
            timezone=data.get("timezone") or "UTC",
            deduplication_key=data.get("deduplicationKey"),
            external_id=data.get("externalId"),
            next_run=_time(data.get("nextRun")),
            last_run=_time(data.get("lastRun")),
            upcoming=[t for t in (_time(v) for v in data.get("upcoming") or []) if t],
            raw=data,
        )


@dataclass
class SchedulePage(Page[Schedule]):
    """One page of :meth:`Schedules.list` (offset pagination, as Trigger.dev's)."""

    current_page: int = 1
    total_pages: int = 1
    count: int = 0


def _path(schedule: str | Schedule) -> str:

    ident = schedule if isinstance(schedule, str) else schedule.id
    return f"/api/v1/schedules/{path_segment(ident)}"


class Schedules:
    """The ``schedules`` namespace."""

    def task(
        self,
        id: str,
        run: Callable[..., object] | None = None,
        *,
        cron: object = None,
        **options: Any,
    ) -> Any:
        """A task run by a schedule; ``cron`` (optional) declares its schedule in code.

        Decorator or call form, like :func:`worker.task`; the payload is a
        :class:`ScheduledPayload`.
        """
        schedule = _normalise_cron(id, cron)
        source = _caller_source(2)

        def build(fn: Callable[..., object]) -> Task[ScheduledPayload, Any]:
            built = _build(id, fn, source, schema=ScheduledPayload, **options)
            built.schedule = schedule
            built.trigger_source = "schedule"
            return built

        return build(run) if run is not None else build

    async def _call(self, method: str, path: str, body: object = None) -> Any:
        response = await transport.request(method, path, json=body)
        return response.json()

    async def create(
        self,
        *,
        task: str,
        cron: str,
        deduplication_key: str | None = None,
        external_id: str | None = None,
        timezone: str = "UTC",
    ) -> Schedule:
        """Attach a cron schedule to a ``schedules.task``. With a ``deduplication_key``, creating
        again with the same key (in the same environment) updates instead of adding one."""
        body = {
            "task": task,
            "cron": cron,
            "deduplicationKey": deduplication_key,
            "externalId": external_id,
            "timezone": timezone,
        }
        return Schedule.from_api(await self._call("POST", "/api/v1/schedules", body))

    async def retrieve(self, schedule: str | Schedule) -> Schedule:
        return Schedule.from_api(await self._call("GET", _path(schedule)))

    async def update(
        self,
        schedule: str | Schedule,
        *,
        task: str,
        cron: str,
        external_id: str | None = None,
        timezone: str = "UTC",
    ) -> Schedule:
        body = {"task": task, "cron": cron, "externalId": external_id, "timezone": timezone}
        return Schedule.from_api(await self._call("PUT", _path(schedule), body))

    async def delete(self, schedule: str | Schedule) -> Schedule:
        return Schedule.from_api(await self._call("DELETE", _path(schedule)))

    del_ = delete

    async def activate(self, schedule: str | Schedule) -> Schedule:
        return Schedule.from_api(await self._call("POST", _path(schedule) + "/activate"))

    async def deactivate(self, schedule: str | Schedule) -> Schedule:
        return Schedule.from_api(await self._call("POST", _path(schedule) + "/deactivate"))

    def list(
        self, *, page: int = 1, per_page: int = 10, task: str | None = None
    ) -> PageList[Schedule]:
        """``await schedules.list()`` is one page (:class:`SchedulePage`); ``async for s in
        schedules.list()`` walks every page from ``page`` on (worker.sdk.pagination)."""

        async def fetch(number: int) -> Page[Schedule]:
            params = {"page": str(number), "perPage": str(per_page)}
            if task:
                params["task"] = task
            response = await transport.request("GET", "/api/v1/schedules", params=params)
            body = response.json()
            pagination = body.get("pagination") or {}
            current = int(pagination.get("currentPage", number))
            total = int(pagination.get("totalPages", 1))
            return SchedulePage(
                data=[Schedule.from_api(s) for s in body.get("data", [])],
                next=current + 1 if current < total else None,
                current_page=current,
                total_pages=total,
                count=int(pagination.get("count", 0)),
            )

        return PageList(fetch, page)

    async def timezones(self, *, exclude_utc: bool = False) -> builtins.list[str]:
        params = {"excludeUtc": "true"} if exclude_utc else None
        response = await transport.request("GET", "/api/v1/timezones", params=params)
        return list(response.json()["timezones"])


schedules = Schedules()
