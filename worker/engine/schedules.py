"""Schedules: imperative CRUD, declarative sync at worker registration, the Schedule.

A schedule row stores its next nominal tick (``next_run_at``, an instant); the cron service
(``services/cron_trigger.py``) fires due ticks. Timing is computed here in Python
(``worker.engine.cron``) so the database only compares instants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.common.limits import MAX_PAGE
from worker.engine.cron import CronError, parse, zone_info
from worker.engine.db import Conn, Pool, Row, fetch_all, fetch_one
from worker.engine.errors import EngineError, NotFound
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.queries import Q

DECLARATIVE_PREFIX = "declarative:"
#: the key of a schedule created without one (hidden, like a declarative schedule's)
AUTO_PREFIX = "auto:"
UPCOMING = 5


@dataclass(frozen=True)
class ScheduleSpec:
    """What an imperative schedule is made of (the API's ``ScheduleBody`` gives it)."""

    task: str
    cron: str
    deduplication_key: str | None = None
    external_id: str | None = None
    timezone: str = "UTC"


@dataclass(frozen=True)
class Schedule:
    id: str
    type: str  # IMPERATIVE | DECLARATIVE
    task_id: str
    active: bool
    #: None for the keys the engine makes (declarative and key-less schedules): never shown
    deduplication_key: str | None
    external_id: str | None
    cron: str
    timezone: str
    next_run_at: datetime | None
    last_run_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> Schedule:
        dedup = row["deduplication_key"]
        return cls(
            id=row["id"], type=row["type"], task_id=row["task_id"], active=row["active"],
            deduplication_key=None if dedup.startswith((DECLARATIVE_PREFIX, AUTO_PREFIX))
            else dedup,
            external_id=row["external_id"], cron=row["cron"], timezone=row["timezone"],
            next_run_at=row["next_run_at"] if row["active"] else None,
            last_run_at=row["last_run_at"], created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    def upcoming(self, now: datetime | None = None, count: int = UPCOMING) -> list[datetime]:
        """The next ``count`` ticks (none while inactive)."""
        if not self.active:
            return []
        return parse(self.cron).upcoming(now or datetime.now(UTC), self.timezone, count)


@dataclass(frozen=True)
class SchedulePage:
    schedules: list[Schedule]
    page: int
    total_pages: int
    count: int


def check_timing(cron: str, timezone: str) -> None:
    """Raise a 400 naming what is wrong with the pattern or the timezone."""
    try:
        pattern = parse(cron)
        zone_info(timezone)
    except CronError as exc:
        raise EngineError(str(exc)) from None
    if pattern.next_after(datetime.now(UTC), timezone) is None:
        raise EngineError(f"cron {cron!r} never fires (no such date): check its day and month")


def next_tick(cron: str, timezone: str, after: datetime | None = None) -> datetime | None:
    return parse(cron).next_after(after or datetime.now(UTC), timezone)


async def _get(conn: Conn, env: Environment, schedule_id: str) -> Row:
    row = await fetch_one(conn, Q.get_schedule, {"id": schedule_id, "environment_id": env.id})
    if row is None:
        raise NotFound(f"schedule {schedule_id!r} not found in the {env.slug} environment")
    return row


async def _scheduled_task(conn: Conn, env: Environment, task_id: str) -> None:
    """Refuse a task that is not registered, or not declared with ``schedules.task``."""
    found = await fetch_one(conn, Q.find_task, {"environment_id": env.id, "task_id": task_id})
    if found is None:
        raise NotFound(
            f"task {task_id!r} is not registered in the {env.slug} environment; start a "
            "worker that exports it before scheduling it"
        )
    # definitions registered before trigger_source existed say nothing: accepted as before
    source = (found["definition"] or {}).get("trigger_source")
    if source is not None and source != "schedule":
        raise EngineError(
            f"task {task_id!r} is not a scheduled task: declare it with "
            "@schedules.task(id=...) to give it schedules"
        )


def _imperative_only(row: Row, action: str) -> None:
    if row["type"] == "DECLARATIVE":
        raise EngineError(
            f"schedule {row['id']} is declared in code (schedules.task {row['task_id']!r}); "
            f"it cannot be {action} through the API: change or remove its cron option instead"
        )


async def create(pool: Pool, env: Environment, body: ScheduleSpec) -> Schedule:
    """Create an imperative schedule; the same deduplication key updates it instead.

    Without a key every call adds a schedule (as in Trigger.dev, where the key is optional).
    """
    schedule_id = new_id("sched")
    key = body.deduplication_key or AUTO_PREFIX + schedule_id
    if body.deduplication_key and key.startswith((DECLARATIVE_PREFIX, AUTO_PREFIX)):
        raise EngineError(
            f"deduplicationKey must not start with {DECLARATIVE_PREFIX!r} or {AUTO_PREFIX!r}"
        )
    check_timing(body.cron, body.timezone)
    params = {
        "id": schedule_id,
        "environment_id": env.id,
        "type": "IMPERATIVE",
        "task_id": body.task,
        "cron": body.cron,
        "timezone": body.timezone,
        "deduplication_key": key,
        "external_id": body.external_id,
        "active": True,
        "next_run_at": next_tick(body.cron, body.timezone),
    }
    async with pool.connection() as conn, conn.transaction():
        await _scheduled_task(conn, env, body.task)
        row = await fetch_one(conn, Q.upsert_schedule, params)
        assert row is not None
        if row["type"] == "DECLARATIVE":
            raise EngineError("that deduplicationKey belongs to a declarative schedule")
    return Schedule.from_row(row)


async def retrieve(pool: Pool, env: Environment, schedule_id: str) -> Schedule:
    async with pool.connection() as conn:
        return Schedule.from_row(await _get(conn, env, schedule_id))


async def update(
    pool: Pool, env: Environment, schedule_id: str, body: ScheduleSpec
) -> Schedule:
    check_timing(body.cron, body.timezone)
    async with pool.connection() as conn, conn.transaction():
        current = await _get(conn, env, schedule_id)
        _imperative_only(current, "updated")
        await _scheduled_task(conn, env, body.task)
        row = await fetch_one(
            conn,
            Q.update_schedule,
            {
                "id": schedule_id,
                "environment_id": env.id,
                "task_id": body.task,
                "cron": body.cron,
                "timezone": body.timezone,
                "external_id": body.external_id,
                "next_run_at": (
                    next_tick(body.cron, body.timezone) if current["active"] else None
                ),
            },
        )
    assert row is not None
    return Schedule.from_row(row)


async def delete(pool: Pool, env: Environment, schedule_id: str) -> Schedule:
    async with pool.connection() as conn, conn.transaction():
        _imperative_only(await _get(conn, env, schedule_id), "deleted")
        row = await fetch_one(
            conn,
            Q.delete_schedule,
            {"id": schedule_id, "environment_id": env.id},
        )
    assert row is not None
    return Schedule.from_row(row)


async def set_active(
    pool: Pool, env: Environment, schedule_id: str, active: bool
) -> Schedule:
    """Activating computes the next tick from now: ticks missed while inactive never fire."""
    async with pool.connection() as conn, conn.transaction():
        current = await _get(conn, env, schedule_id)
        params = {
            "id": schedule_id,
            "environment_id": env.id,
            "active": active,
            "next_run_at": next_tick(current["cron"], current["timezone"]) if active else None,
        }
        if current["active"] == active:
            return Schedule.from_row(current)
        row = await fetch_one(conn, Q.set_schedule_active, params)
    assert row is not None
    return Schedule.from_row(row)


async def list_schedules(
    pool: Pool, env: Environment, page: int = 1, per_page: int = 10, task_id: str | None = None
) -> SchedulePage:
    if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= 100:
        raise EngineError(f"page must be 1..{MAX_PAGE} and perPage between 1 and 100")
    params = {
        "environment_id": env.id,
        "task_id": task_id,
        "limit": per_page,
        "offset": (page - 1) * per_page,
    }
    async with pool.connection() as conn:
        rows = await fetch_all(conn, Q.list_schedules, params)
        total = await fetch_one(conn, Q.count_schedules, params)
    count = int(total["total"]) if total else 0
    return SchedulePage([Schedule.from_row(r) for r in rows], page,
                        total_pages=max(1, -(-count // per_page)), count=count)


def declared_schedule(definition: dict[str, Any]) -> dict[str, Any] | None:
    """The ``schedule`` of a manifest entry, normalised to ``{pattern, timezone, environments}``."""
    raw = definition.get("schedule")
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = {"pattern": raw}
    if not isinstance(raw, dict) or not isinstance(raw.get("pattern"), str):
        raise EngineError(
            f"task {definition.get('id')!r}: schedule must be a cron string or "
            '{"pattern": "...", "timezone": "..."}'
        )
    timezone = raw.get("timezone") or "UTC"
    try:
        check_timing(raw["pattern"], timezone)
    except EngineError as exc:
        raise EngineError(f"task {definition.get('id')!r}: {exc.message}") from None
    return {
        "pattern": raw["pattern"],
        "timezone": timezone,
        "environments": raw.get("environments"),
    }


async def sync_declarative(
    conn: Conn, env: Environment, version_id: str, tasks: list[dict[str, Any]]
) -> None:
    """Make the environment's declarative schedules match the manifest of its newest version.

    Called inside the registration transaction. An older version registering again (a replica
    of a previous deploy restarting) changes nothing, so schedules never flip back.
    """
    newest = await fetch_one(conn, Q.newest_version, {"environment_id": env.id})
    if newest is None or str(newest["id"]) != version_id:
        return
    keep: list[str] = []
    for definition in tasks:
        declared = declared_schedule(definition)
        if declared is None:
            continue
        envs = declared["environments"]
        if envs and env.type not in envs:
            continue
        key = DECLARATIVE_PREFIX + definition["id"]
        keep.append(key)
        await conn.execute(
            Q.upsert_schedule,
            {
                "id": new_id("sched"),
                "environment_id": env.id,
                "type": "DECLARATIVE",
                "task_id": definition["id"],
                "cron": declared["pattern"],
                "timezone": declared["timezone"],
                "deduplication_key": key,
                "external_id": None,
                "active": True,
                "next_run_at": next_tick(declared["pattern"], declared["timezone"]),
            },
        )
    await conn.execute(Q.delete_stale_declarative, {"environment_id": env.id, "keep": keep})
