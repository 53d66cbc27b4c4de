"""The rescuer: turns expired leases into failed attempts that retry by policy.

A worker that died (SIGKILL, lost network, lost host) stops heartbeating; once its lease
expires the attempt fails with TASK_RUN_STALLED_EXECUTING, which the engine retries from the
run's locked retry config. The late completion of that worker, if any, is refused by the fence.
"""

from __future__ import annotations

import logging

from worker.common.errors import TASK_RUN_STALLED_EXECUTING, internal_error
from worker.engine import metrics
from worker.engine.db import Pool, fetch_all, fetch_one
from worker.engine.leases import fail_attempt
from worker.engine.queries import Q
from worker.engine.services.periodic import periodic

log = logging.getLogger(__name__)


async def rescue_expired(pool: Pool, limit: int = 100) -> int:
    """One sweep; returns how many runs were rescued."""
    async with pool.connection() as conn, conn.transaction():
        rows = await fetch_all(conn, Q.expired_leases, {"limit": limit})
        for row in rows:
            fence = {
                "run_id": row["id"],
                "instance_id": row["lease_owner"],
                "attempt_number": row["attempt_number"],
                "environment_id": row["environment_id"],
            }
            run = await fetch_one(conn, Q.lock_leased_run, fence)
            if run is None:
                continue
            error = internal_error(
                TASK_RUN_STALLED_EXECUTING,
                f"the worker holding attempt {row['attempt_number']} stopped heartbeating "
                "and its lease expired",
            )
            outcome, status, _ = await fail_attempt(conn, run, error)
            # the dead worker's attempt span, closed here (docs/api.md, "Traces and logs")
            await conn.execute(Q.insert_rescued_attempt_span, {
                "run_id": row["id"], "attempt_number": row["attempt_number"],
                "message": error["message"]})
            log.warning("rescued run %s: %s (%s)", row["id"], outcome, status)
    return len(rows)


async def run_rescuer(pool: Pool, interval: float) -> None:
    async def sweep() -> None:
        while (rescued := await rescue_expired(pool)) > 0:
            metrics.RESCUES.inc(rescued)

    await periodic("rescuer", sweep, interval)
