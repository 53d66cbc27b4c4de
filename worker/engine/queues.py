"""Queues: list them, pause and resume them, override their concurrency limit at runtime.

Limits are enforced at dequeue (``trigger_pick_runs_v1`` in migration 0002); a change here
takes effect at the next dequeue of any replica. Runs already executing are never stopped.
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.engine.db import Params, Pool, Row, fetch_all, fetch_one
from worker.engine.errors import NotFound
from worker.engine.keys import Environment
from worker.engine.queries import Q


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue now: its runs, whether it is paused, and its limits (the override made at
    runtime wins over the declared one; the environment's applies when neither is set)."""

    name: str
    running: int
    queued: int
    paused: bool
    #: the limit the task or queue declares
    declared_limit: int | None
    #: the limit set at runtime (``concurrency/override``)
    override: int | None
    env_limit: int

    @classmethod
    def from_row(cls, row: Row, env_limit: int) -> QueueState:
        return cls(row["name"], row["running"], row["queued"], row["paused"],
                   row["concurrency_limit"], row["limit_override"], env_limit)

    @property
    def is_task_queue(self) -> bool:
        return self.name.startswith("task/")

    @property
    def limit(self) -> int | None:
        """The queue's own limit in force (None: only the environment's)."""
        return self.override if self.override is not None else self.declared_limit


async def list_queues(
    pool: Pool, env: Environment, name: str | None = None
) -> list[QueueState]:
    async with pool.connection() as conn:
        rows = await fetch_all(conn, Q.list_queues, {"environment_id": env.id, "name": name})
    return [QueueState.from_row(row, env.concurrency_limit) for row in rows]


async def retrieve(pool: Pool, env: Environment, name: str) -> QueueState:
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
