"""SQL from task code: ``rows = await sql("select %s::int as n", 1)``.

``from worker.db import sql, pool, close``. One psycopg ``AsyncConnectionPool`` per process,
created on first use and keyed by ``os.getpid()``: executors are forked from a zygote, and a
pool (its sockets and worker threads) must never cross a fork, so a pool inherited from a
parent is dropped (never closed: its sockets belong to the parent) and a fresh one is opened.

Where it connects: ``TASKS_DATABASE_URL``, else ``DATABASE_URL`` (``trigger dev`` sets both to
a database of the tasks' own on its embedded Postgres). Pool size: ``TASKS_DB_POOL_MAX``
(default 4).

Always pass values as parameters (``%s``) and cast them explicitly (``%s::int``,
``%s::text``, ``%s::timestamptz``), never format them into the query text.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["DatabaseNotConfiguredError", "close", "database_url", "pool", "sql"]

_pools: dict[int, AsyncConnectionPool] = {}
_locks: dict[int, asyncio.Lock] = {}


class DatabaseNotConfiguredError(RuntimeError):
    """Neither ``TASKS_DATABASE_URL`` nor ``DATABASE_URL`` is set."""


def database_url() -> str:
    """Where task SQL goes: ``TASKS_DATABASE_URL``, else ``DATABASE_URL``."""
    for name in ("TASKS_DATABASE_URL", "DATABASE_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    raise DatabaseNotConfiguredError(
        "TASKS_DATABASE_URL or DATABASE_URL is not set: `trigger dev` sets them for its "
        "tasks; elsewhere set one in the worker's environment"
    )


def _pool_max() -> int:
    value = os.environ.get("TASKS_DB_POOL_MAX", "").strip()
    if not value:
        return 4
    try:
        return max(1, int(value))
    except ValueError:
        raise DatabaseNotConfiguredError(
            f"TASKS_DB_POOL_MAX must be an integer, got {value!r}"
        ) from None


async def pool() -> AsyncConnectionPool:
    """This process's pool, opened on first use."""
    pid = os.getpid()
    existing = _pools.get(pid)
    if existing is not None:
        return existing
    lock = _locks.setdefault(pid, asyncio.Lock())
    async with lock:
        existing = _pools.get(pid)
        if existing is not None:
            return existing
        from psycopg_pool import AsyncConnectionPool

        new = AsyncConnectionPool(
            database_url(),
            min_size=1,
            max_size=_pool_max(),
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
    _locks.pop(os.getpid(), None)
    if current is not None:
        await current.close()
