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

The clock is injectable: :func:`fire_due` takes ``now``; the loop takes a ``clock`` callable.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.engine import triggering
from worker.engine.cron import parse
from worker.engine.db import Conn, Pool
from worker.engine.errors import EngineError
from worker.engine.keys import Environment
from worker.engine.models import TriggerOptions
from worker.engine.queries import Q
from worker.engine.schedules import UPCOMING

log = logging.getLogger(__name__)


def _payload(schedule: dict[str, Any], tick: datetime) -> str:
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


async def _environment(conn: Conn, environment_id: Any) -> Environment:
    row = await (
        await conn.execute(Q.schedule_environment, {"environment_id": environment_id})
    ).fetchone()
    assert row is not None
    return Environment(
        id=str(row["environment_id"]),
        slug=row["slug"],
        type=row["type"],
        concurrency_limit=row["concurrency_limit"],
        project_id=str(row["project_id"]),
        project_ref=row["project_ref"],
    )


async def _fire(conn: Conn, schedule: dict[str, Any], tick: datetime) -> str | None:
    """Create the run of one tick (inside the caller's transaction). None if already fired."""
    claimed = await (
        await conn.execute(Q.claim_tick, {"schedule_id": schedule["id"], "tick": tick})
    ).fetchone()
    if claimed is None:
        return None
    env = await _environment(conn, schedule["environment_id"])
    task_id = schedule["task_id"]
    creator = triggering.RunCreator(conn, env)
    await creator.load_definitions([task_id])
    try:
        async with conn.transaction():  # savepoint: a refused run leaves the tick recorded
            run_id, _ = await creator.create(
                task_id, (_payload(schedule, tick), "application/json"), TriggerOptions()
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

    Returns the ids of the runs created.
    """
    now = now or datetime.now(UTC)
    created: list[str] = []
    params = {"now": now, "limit": limit, "environment_id": environment_id}
    async with pool.connection() as conn, conn.transaction():
        due = await (await conn.execute(Q.due_schedules, params)).fetchall()
        for schedule in due:
            cron = parse(schedule["cron"])
            tz = schedule["timezone"]
            tick = cron.latest_at_or_before(now, tz, schedule["next_run_at"])
            fired_at = None
            if tick is not None:
                if tick > schedule["next_run_at"]:
                    log.warning(
                        "schedule %s: ticks from %s to before %s were missed; firing "
                        "only the latest",
                        schedule["id"],
                        schedule["next_run_at"].isoformat(),
                        tick.isoformat(),
                    )
                run_id = await _fire(conn, schedule, tick)
                if run_id is not None:
                    created.append(run_id)
                fired_at = tick
            await conn.execute(
                Q.advance_schedule,
                {
                    "id": schedule["id"],
                    "next_run_at": cron.next_after(now, tz),
                    "last_run_at": fired_at,
                },
            )
    return created


async def seconds_until_next(pool: Pool, now: datetime) -> float | None:
    async with pool.connection() as conn:
        row = await (await conn.execute(Q.next_schedule_due)).fetchone()
    if row is None or row["next_due"] is None:
        return None
    return float((row["next_due"] - now).total_seconds())


async def run_cron_trigger(
    pool: Pool, max_sleep: float | None = None, clock: Callable[[], datetime] | None = None
) -> None:
    """Sweep forever; sleep until the next due tick, at most ``max_sleep`` seconds
    (``TRIGGER_CRON_MAX_SLEEP``, default 1), which bounds how late a schedule created or changed
    by another replica is noticed.
    """
    if max_sleep is None:
        max_sleep = float(os.environ.get("TRIGGER_CRON_MAX_SLEEP") or 1.0)
    clock = clock or (lambda: datetime.now(UTC))
    while True:
        wait = max_sleep
        try:
            created = await fire_due(pool, clock())
            if created:
                log.info("cron: created %d scheduled run(s)", len(created))
            nxt = await seconds_until_next(pool, clock())
            if nxt is not None:
                wait = min(max_sleep, max(0.01, nxt))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cron sweep failed; retrying")
        await asyncio.sleep(wait)
