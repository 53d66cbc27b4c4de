"""Connections to the engine's Postgres."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeAlias

from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

Conn: TypeAlias = AsyncConnection[DictRow]
Pool: TypeAlias = AsyncConnectionPool[Conn]
#: a row as psycopg's dict_row gives it; turned into a typed value (``X.from_row``) at the
#: boundary of the module that read it
Row: TypeAlias = DictRow
Params: TypeAlias = Mapping[str, Any]


async def fetch_one(conn: Conn, query: str, params: Params | None = None) -> Row | None:
    """The first row of ``query`` (None if it has none)."""
    return await (await conn.execute(query, params)).fetchone()


async def fetch_all(conn: Conn, query: str, params: Params | None = None) -> list[Row]:
    return await (await conn.execute(query, params)).fetchall()


async def open_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> Pool:
    """A pool of dict-row connections; statements are prepared after their first use."""

    async def configure(conn: Conn) -> None:
        conn.prepare_threshold = 1
        # Short OLTP statements only: JIT compilation costs more than it ever saves, and it
        # kicks in when a big queue inflates cost estimates.
        await conn.execute("SET jit = off")
        await conn.commit()

    pool: Pool = AsyncConnectionPool(
        url,
        connection_class=AsyncConnection[DictRow],
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": False},
        configure=configure,
        open=False,
        name="trigger-engine",
    )
    await pool.open(wait=True, timeout=30)
    return pool
