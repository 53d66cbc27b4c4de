"""The expirer: runs not started before their TTL end EXPIRED (docs/triggerdev-semantics.md,
"Trigger options": ``ttl``).

Dequeue also skips expired runs, so a run past its TTL never starts even between sweeps.
"""

from __future__ import annotations

import asyncio
import logging

from worker.engine.db import Pool
from worker.engine.queries import Q

log = logging.getLogger(__name__)


async def expire_due(pool: Pool, limit: int = 1000) -> int:
    async with pool.connection() as conn, conn.transaction():
        rows = await (await conn.execute(Q.expire_runs, {"limit": limit})).fetchall()
    return len(rows)


async def run_expirer(pool: Pool, interval: float) -> None:
    while True:
        try:
            while await expire_due(pool) > 0:
                pass
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("expirer sweep failed; retrying")
        await asyncio.sleep(interval)
