"""The waitpoint timer: completes DURATION waitpoints whose time has come and times out TOKEN
waitpoints past their timeout (resuming the runs waiting on them, via the completion trigger).

Every few seconds it also re-queues checkpointed runs that wait on nothing any more: the
completion trigger does this at once, the sweep is a safety net that makes a missed resume
cost seconds, not a stuck run.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from worker.engine.db import Pool
from worker.engine.queries import Q

log = logging.getLogger(__name__)
SAFETY_NET_SECONDS = 5.0


async def complete_due(pool: Pool, limit: int = 1000) -> tuple[int, float | None]:
    """One sweep. Returns (waitpoints completed, seconds until the next one is due or None)."""
    async with pool.connection() as conn, conn.transaction():
        done = await (await conn.execute(Q.complete_due_waitpoints, {"limit": limit})).fetchall()
        nxt = await (await conn.execute(Q.next_waitpoint_due)).fetchone()
    next_due = nxt["next_due"] if nxt else None
    wait = None if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
    return len(done), wait


async def resume_unblocked(pool: Pool) -> int:
    async with pool.connection() as conn, conn.transaction():
        rows = await (await conn.execute(Q.resume_unblocked_runs)).fetchall()
        for env_id in {str(r["environment_id"]) for r in rows}:
            await conn.execute(Q.notify_runs, {"environment_id": env_id})
    return len(rows)


async def run_waitpoint_timer(pool: Pool, max_sleep: float) -> None:
    last_net = 0.0
    while True:
        wait = max_sleep
        try:
            completed, next_wait = await complete_due(pool)
            if completed:
                wait = 0
            elif next_wait is not None:
                wait = min(max_sleep, max(0.005, next_wait))
            if time.monotonic() - last_net > SAFETY_NET_SECONDS:
                last_net = time.monotonic()
                if resumed := await resume_unblocked(pool):
                    log.warning("resumed %d checkpointed run(s) the trigger missed", resumed)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("waitpoint timer sweep failed; retrying")
        await asyncio.sleep(wait)
