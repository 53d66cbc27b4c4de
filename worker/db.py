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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from worker.common.settings import env_int, env_str

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["DatabaseNotConfiguredError", "close", "database_url", "pool", "sql"]

_pools: dict[int, AsyncConnectionPool] = {}
_locks: dict[int, asyncio.Lock] = {}


class DatabaseNotConfiguredError(RuntimeError):
    """Neither ``TASKS_DATABASE_URL`` nor ``DATABASE_URL`` is set."""


@dataclass(frozen=True)
class TasksDbSettings:
    """Read when a process opens its pool (an executor reads the environment it was given)."""

    url: str
    pool_max: int = 4

    @classmethod
    def from_env(cls) -> TasksDbSettings:
        url = env_str("TASKS_DATABASE_URL") or env_str("DATABASE_URL")
        if url is None:
            raise DatabaseNotConfiguredError(
                "TASKS_DATABASE_URL or DATABASE_URL is not set: `trigger dev` sets them for its "
                "tasks; elsewhere set one in the worker's environment"
            )
        return cls(url, env_int("TASKS_DB_POOL_MAX", 4, minimum=1))


def database_url() -> str:
    """Where task SQL goes: ``TASKS_DATABASE_URL``, else ``DATABASE_URL``."""
    return TasksDbSettings.from_env().url


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

        settings = TasksDbSettings.from_env()
        new = AsyncConnectionPool(
            settings.url,
            min_size=1,
            max_size=settings.pool_max,
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
