"""The expirer: runs not started before their TTL end EXPIRED (docs/triggerdev-semantics.md,
"Trigger options": ``ttl``).

Dequeue also skips expired runs, so a run past its TTL never starts even between sweeps.
"""

from __future__ import annotations

from worker.engine.db import Pool, fetch_all
from worker.engine.queries import Q
from worker.engine.services.periodic import periodic


async def expire_due(pool: Pool, limit: int = 1000) -> int:
    async with pool.connection() as conn, conn.transaction():
        rows = await fetch_all(conn, Q.expire_runs, {"limit": limit})
    return len(rows)


async def run_expirer(pool: Pool, interval: float) -> None:
    async def sweep() -> None:
        while await expire_due(pool) > 0:
            pass

    await periodic("expirer", sweep, interval)
