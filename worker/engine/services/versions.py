"""The version sweep: no queued run waits forever for a version nobody serves.

A run is locked to the version of its first lease. When no live worker serves that version any
more (a deploy replaced the workers, a hot reload replaced the code, a worker stopped), the
next dequeue migrates the run to the dequeuing worker's newest version if that has its task
(``dequeue`` in ``sql/queries/leases.sql``). A run that cannot migrate — pinned with the trigger
option ``version``, or its task is on no live worker — is moved here to PENDING_VERSION with a
``status_reason``, and back into the queue once a live worker can take it. See
docs/run-states.md, "Versions".
"""

from __future__ import annotations

import logging

from worker.engine.db import Pool, fetch_all
from worker.engine.queries import Q
from worker.engine.run_creator import LIVE_WORKER_SECONDS
from worker.engine.services.periodic import periodic

log = logging.getLogger(__name__)


async def sweep_versions(pool: Pool, limit: int = 1000) -> tuple[int, int]:
    """One sweep. Returns (runs parked in PENDING_VERSION, runs released to the queue)."""
    params = {"limit": limit, "live_seconds": LIVE_WORKER_SECONDS}
    async with pool.connection() as conn, conn.transaction():
        parked = await fetch_all(conn, Q.park_unservable_runs, params)
        released = await fetch_all(conn, Q.unpark_servable_runs, params)
        for env_id in {str(r["environment_id"]) for r in released}:
            await conn.execute(Q.notify_runs, {"environment_id": env_id})
    for row in parked:
        log.info("run %s waits in PENDING_VERSION: its version is not served", row["id"])
    return len(parked), len(released)


async def run_version_sweep(pool: Pool, interval: float) -> None:
    async def sweep() -> None:
        await sweep_versions(pool)

    await periodic("version", sweep, interval)
