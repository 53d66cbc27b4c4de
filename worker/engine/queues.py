"""Queues: list them, pause and resume them, override their concurrency limit at runtime.

Limits are enforced at dequeue (``trigger_pick_runs_v1`` in migration 0002); a change here
takes effect at the next dequeue of any replica. Runs already executing are never stopped.
"""

from __future__ import annotations

from worker.engine.db import Params, Pool, Row, fetch_all, fetch_one
from worker.engine.errors import NotFound
from worker.engine.keys import Environment
from worker.engine.queries import Q


def _present(row: Row, env_limit: int) -> Row:
    name = row["name"]
    effective = (
        row["limit_override"] if row["limit_override"] is not None else row["concurrency_limit"]
    )
    return {
        "id": name,
        "name": name,
        "type": "task" if name.startswith("task/") else "custom",
        "running": row["running"],
        "queued": row["queued"],
        "paused": row["paused"],
        "concurrencyLimit": effective if effective is not None else env_limit,
        "concurrency": {
            "current": effective,
            "base": row["concurrency_limit"],
            "override": row["limit_override"],
        },
    }


async def list_queues(
    pool: Pool, env: Environment, name: str | None = None
) -> list[Row]:
    async with pool.connection() as conn:
        rows = await fetch_all(conn, Q.list_queues, {"environment_id": env.id, "name": name})
    return [_present(row, env.concurrency_limit) for row in rows]


async def retrieve(pool: Pool, env: Environment, name: str) -> Row:
    found = await list_queues(pool, env, name)
    if not found:
        raise NotFound(f"queue {name!r} not found in the {env.slug} environment")
    return found[0]


async def _update(pool: Pool, env: Environment, query: str, params: Params) -> None:
    async with pool.connection() as conn, conn.transaction():
        row = await fetch_one(conn, query, {"environment_id": env.id, **params})
        if row is None:
            raise NotFound(f"queue {params['name']!r} not found in the {env.slug} environment")
        await conn.execute(Q.notify_runs, {"environment_id": env.id})  # a slot may be free now


async def set_paused(pool: Pool, env: Environment, name: str, paused: bool) -> None:
    await _update(pool, env, Q.set_queue_paused, {"name": name, "paused": paused})


async def override_limit(pool: Pool, env: Environment, name: str, limit: int | None) -> None:
    await _update(pool, env, Q.set_queue_override, {"name": name, "limit": limit})
