"""The scheduler: moves runs whose delay or retry backoff is over back into the queue.

It sleeps until the earliest due run (at most ``max_sleep``), so a 200 ms retry backoff is
honoured to within a few milliseconds without polling hard.
"""

from __future__ import annotations

from datetime import UTC, datetime

from worker.engine.db import Pool, fetch_all, fetch_one
from worker.engine.queries import Q
from worker.engine.run_creator import LIVE_WORKER_SECONDS
from worker.engine.services.periodic import periodic, until_due


async def promote_due(pool: Pool, limit: int = 1000) -> tuple[int, float | None]:
    """One sweep. Returns (runs promoted, seconds until the next due run or None)."""
    async with pool.connection() as conn, conn.transaction():
        params = {"limit": limit, "live_seconds": LIVE_WORKER_SECONDS}
        rows = await fetch_all(conn, Q.promote_due_runs, params)
        for env_id in {str(r["environment_id"]) for r in rows}:
            await conn.execute(Q.notify_runs, {"environment_id": env_id})
        nxt = await fetch_one(conn, Q.next_due_at)
    next_due = nxt["next_due"] if nxt else None
    wait = None if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
    return len(rows), wait


async def run_scheduler(pool: Pool, max_sleep: float) -> None:
    async def sweep() -> float:
        promoted, next_wait = await promote_due(pool)
        return 0 if promoted else until_due(next_wait, max_sleep, 0.005)

    await periodic("scheduler", sweep, max_sleep)
