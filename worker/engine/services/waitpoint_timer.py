"""The waitpoint timer: completes DURATION waitpoints whose time has come and times out TOKEN
waitpoints past their timeout (resuming the runs waiting on them, via the completion trigger).

Every few seconds it also re-queues checkpointed runs that wait on nothing any more: the
completion trigger does this at once, the sweep is a safety net that makes a missed resume
cost seconds, not a stuck run.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from worker.engine.db import Pool, fetch_all, fetch_one
from worker.engine.queries import Q
from worker.engine.services.periodic import periodic, until_due

log = logging.getLogger(__name__)
SAFETY_NET_SECONDS = 5.0


async def complete_due(pool: Pool, limit: int = 1000) -> tuple[int, float | None]:
    """One sweep. Returns (waitpoints completed, seconds until the next one is due or None)."""
    async with pool.connection() as conn, conn.transaction():
        done = await fetch_all(conn, Q.complete_due_waitpoints, {"limit": limit})
        nxt = await fetch_one(conn, Q.next_waitpoint_due)
    next_due = nxt["next_due"] if nxt else None
    wait = None if next_due is None else (next_due - datetime.now(UTC)).total_seconds()
    return len(done), wait


async def resume_unblocked(pool: Pool) -> int:
    async with pool.connection() as conn, conn.transaction():
        rows = await fetch_all(conn, Q.resume_unblocked_runs)
        for env_id in {str(r["environment_id"]) for r in rows}:
            await conn.execute(Q.notify_runs, {"environment_id": env_id})
    return len(rows)


async def run_waitpoint_timer(pool: Pool, max_sleep: float) -> None:
    last_net = 0.0

    async def sweep() -> float:
        nonlocal last_net
        completed, next_wait = await complete_due(pool)
        if time.monotonic() - last_net > SAFETY_NET_SECONDS:
            last_net = time.monotonic()
            if resumed := await resume_unblocked(pool):
                log.warning("resumed %d checkpointed run(s) the trigger missed", resumed)
        return 0 if completed else until_due(next_wait, max_sleep, 0.005)

    await periodic("waitpoint timer", sweep, max_sleep)
