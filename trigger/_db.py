"""The shared SQL helper for task code: ``rows = await sql("select %s::int as n", 1)``.

One psycopg ``AsyncConnectionPool`` per executor process, created on first use and keyed by
``os.getpid()``: executors are forked from a zygote, and a pool (its sockets and worker threads)
must never cross a fork. Configured through ``_env`` (``TASKS_DATABASE_URL`` or
``DATABASE_URL``; pool size from ``TASKS_DB_POOL_MAX``, default 4).

Always pass values as parameters (``%s``) and cast them explicitly (``%s::int``,
``%s::text``, ``%s::timestamptz``), never format them into the query text.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from . import _env

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

_pools: dict[int, AsyncConnectionPool] = {}
_lock: dict[int, asyncio.Lock] = {}


async def pool() -> AsyncConnectionPool:
    """This process's pool, opened on first use."""
    pid = os.getpid()
    existing = _pools.get(pid)
    if existing is not None:
        return existing
    lock = _lock.setdefault(pid, asyncio.Lock())
    async with lock:
        existing = _pools.get(pid)
        if existing is not None:
            return existing
        from psycopg_pool import AsyncConnectionPool

        new = AsyncConnectionPool(
            _env.database_url(),
            min_size=1,
            max_size=_env.optional_int("TASKS_DB_POOL_MAX", 4),
            kwargs={"autocommit": True},
            open=False,
            name=f"tasks-{pid}",
        )
        await new.open(wait=True, timeout=30)
        _pools.clear()  # drop (never close) a pool inherited from a parent process
        _pools[pid] = new
        return new


async def sql(query: str, *params: Any) -> list[dict[str, Any]]:
    """Run one parameterised statement; return its rows as dicts ([] when it returns none)."""
    from psycopg.rows import dict_row

    async with (await pool()).connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params or None)
        if cur.description is None:
            return []
        return list(await cur.fetchall())


async def close() -> None:
    """Close this process's pool (tests, or a clean shutdown hook)."""
    current = _pools.pop(os.getpid(), None)
    if current is not None:
        await current.close()
