"""The cron service: fires the runs of due schedule ticks. Runs in every API replica.

Exactly once per (schedule, tick), however many replicas sweep at the same moment: the sweep
locks due schedules with ``FOR UPDATE SKIP LOCKED`` (so replicas share the work), and the run
is created in the same transaction as a ``schedule_ticks`` row whose primary key is
``(schedule_id, tick)`` — a replica that somehow reaches the same tick (clock skew, a stale
read) conflicts on that key and creates nothing.

Missed ticks (the API was down, or the schedule's task was not registered): **one catch-up run,
no flood**. When a schedule is found due, only its most recent tick at or before now fires (its
payload ``timestamp`` is that nominal tick, so the task knows it is late); older missed ticks are
skipped and logged. The schedule then continues from the next tick after now. A schedule that
was deactivated and activated again starts from the next tick after activation (nothing fires
for the inactive period).

A schedule that cannot fire (a pattern or time zone stored around the API's checks, or accepted
by another version) stops alone: its ``next_run_at`` is cleared, with an error in the log, until
its cron or timezone is updated; a database error skips it for this sweep. Either way the
other schedules of the sweep fire.

The clock is injectable: :func:`fire_due` takes ``now``; the loop takes a ``clock`` callable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

import orjson
import psycopg

from worker.engine.cron import CronError, parse
from worker.engine.db import Conn, Pool, Row, fetch_all, fetch_one
from worker.engine.errors import EngineError
from worker.engine.keys import Environment
from worker.engine.models import RunOptions
from worker.engine.queries import Q
from worker.engine.run_creator import RunCreator
from worker.engine.schedules import UPCOMING
from worker.engine.services.periodic import periodic, until_due

log = logging.getLogger(__name__)


def _payload(schedule: Row, tick: datetime) -> str:
    """The run payload of Trigger.dev scheduled tasks (camelCase JSON, ISO timestamps)."""
    cron = parse(schedule["cron"])
    last = schedule["last_run_at"]
    return orjson.dumps(
        {
            "type": schedule["type"],
            "timestamp": tick.isoformat(),
            "lastTimestamp": last.isoformat() if last else None,
            "timezone": schedule["timezone"],
            "scheduleId": schedule["id"],
            "externalId": schedule["external_id"],
            "upcoming": [
                t.isoformat() for t in cron.upcoming(tick, schedule["timezone"], UPCOMING)
            ],
        }
    ).decode()


async def _environment(conn: Conn, environment_id: UUID) -> Environment:
    row = await fetch_one(conn, Q.schedule_environment, {"environment_id": environment_id})
    assert row is not None
    return Environment.from_row(row)


async def _fire(conn: Conn, schedule: Row, tick: datetime) -> str | None:
    """Create the run of one tick (inside the caller's transaction). None if already fired."""
    claimed = await fetch_one(conn, Q.claim_tick, {"schedule_id": schedule["id"], "tick": tick})
    if claimed is None:
        return None
    env = await _environment(conn, schedule["environment_id"])
    task_id = schedule["task_id"]
    creator = RunCreator(conn, env)
    await creator.load_definitions([task_id])
    try:
        async with conn.transaction():  # savepoint: a refused run leaves the tick recorded
            run_id, _ = await creator.create(
                task_id, (_payload(schedule, tick), "application/json"), RunOptions()
            )
    except EngineError as exc:  # the task is not registered any more, ...
        log.warning(
            "schedule %s: could not trigger %r for tick %s: %s",
            schedule["id"],
            task_id,
            tick.isoformat(),
            exc.message,
        )
        return None
    await conn.execute(
        Q.set_tick_run, {"schedule_id": schedule["id"], "tick": tick, "run_id": run_id}
    )
    return run_id


async def fire_due(
    pool: Pool,
    now: datetime | None = None,
    limit: int = 100,
    environment_id: str | None = None,
) -> list[str]:
    """One sweep at ``now`` (default: the real clock), optionally of one environment only.

    Returns the ids of the runs created. Each schedule is swept in a savepoint of its own: one
    that fails never holds up the others (see :func:`_sweep_one`).
    """
    now = now or datetime.now(UTC)
    created: list[str] = []
    params = {"now": now, "limit": limit, "environment_id": environment_id}
    async with pool.connection() as conn, conn.transaction():
        due = await fetch_all(conn, Q.due_schedules, params)
        for schedule in due:
            try:
                async with conn.transaction():  # a savepoint
                    run_id = await _sweep_one(conn, schedule, now)
            except CronError as exc:
                # Its own pattern or time zone, no longer understood (written around the API,
                # or by a version that accepted it): it would fail at every sweep, and fail
                # the sweep of every schedule behind it. It stops until it is updated.
                log.error("schedule %s cannot fire: %s; it will not fire again until its "
                          "cron or timezone is updated", schedule["id"], exc)
                await conn.execute(Q.advance_schedule, {
                    "id": schedule["id"], "next_run_at": None, "last_run_at": None})
                continue
            except psycopg.Error:
                log.exception("schedule %s: its sweep failed; the next sweep tries again",
                              schedule["id"])
                continue
            if run_id is not None:
                created.append(run_id)
    return created


async def _sweep_one(conn: Conn, schedule: Row, now: datetime) -> str | None:
    """Fire ``schedule``'s latest tick at or before ``now`` (if any) and move it to its next
    tick after ``now``; the id of the run created, if one was."""
    cron = parse(schedule["cron"])
    tz = schedule["timezone"]
    tick = cron.latest_at_or_before(now, tz, schedule["next_run_at"])
    next_run_at = cron.next_after(now, tz)
    run_id = None
    if tick is not None:
        if tick > schedule["next_run_at"]:
            log.warning(
                "schedule %s: ticks from %s to before %s were missed; firing only the latest",
                schedule["id"],
                schedule["next_run_at"].isoformat(),
                tick.isoformat(),
            )
        run_id = await _fire(conn, schedule, tick)
    await conn.execute(
        Q.advance_schedule,
        {"id": schedule["id"], "next_run_at": next_run_at, "last_run_at": tick},
    )
    return run_id


async def seconds_until_next(pool: Pool, now: datetime) -> float | None:
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.next_schedule_due)
    if row is None or row["next_due"] is None:
        return None
    return float((row["next_due"] - now).total_seconds())


async def run_cron_trigger(
    pool: Pool, max_sleep: float, clock: Callable[[], datetime] | None = None
) -> None:
    """Sweep forever; sleep until the next due tick, at most ``max_sleep`` seconds
    (``TRIGGER_CRON_MAX_SLEEP``, default 1), which bounds how late a schedule created or changed
    by another replica is noticed.
    """
    now = clock or (lambda: datetime.now(UTC))

    async def sweep() -> float:
        created = await fire_due(pool, now())
        if created:
            log.info("cron: created %d scheduled run(s)", len(created))
        return until_due(await seconds_until_next(pool, now()), max_sleep, 0.01)

    await periodic("cron", sweep, max_sleep)
