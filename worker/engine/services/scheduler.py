"""The scheduler: moves runs whose delay or retry backoff is over back into the queue.

It sleeps until the earliest due run (at most ``max_sleep``), so a 200 ms retry backoff is
honoured to within a few milliseconds without polling hard.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from worker.engine.db import Pool
from worker.engine.queries import Q
from worker.engine.triggering import LIVE_WORKER_SECONDS

log = logging.getLogger(__name__)


async def promote_due(pool: Pool, limit: int = 1000) -> tuple[int, float | None]:
    """One sweep. Returns (runs promoted, seconds until the next due run or None)."""
    async with pool.connection() as conn, conn.transaction():
        params = {"limit": limit, "live_seconds": LIVE_WORKER_SECONDS}
        rows = await (await conn.execute(Q.promote_due_runs, params)).fetchall()
        for env_id in {str(r["environment_id"]) for r in rows}:
            await conn.execute(Q.notify_runs, {"environment_id": env_id})
        nxt = await (await conn.execute(Q.next_due_at)).fetchone()
    next_due = nxt["next_due"] if nxt else None
    wait = None if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
    return len(rows), wait


async def run_scheduler(pool: Pool, max_sleep: float) -> None:
    while True:
        wait = max_sleep
        try:
            promoted, next_wait = await promote_due(pool)
            if promoted:
                wait = 0
            elif next_wait is not None:
                wait = min(max_sleep, max(0.005, next_wait))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("scheduler sweep failed; retrying")
        await asyncio.sleep(wait)
