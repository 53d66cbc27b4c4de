"""Connections to the engine's Postgres."""

from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool


async def open_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> AsyncConnectionPool:
    """A pool of dict-row connections; statements are prepared after their first use."""

    async def configure(conn: AsyncConnection) -> None:
        conn.prepare_threshold = 1

    pool = AsyncConnectionPool(
        url,
        min_size=min_size,
        max_size=max_size,
        kwargs={"row_factory": dict_row, "autocommit": False},
        configure=configure,
        open=False,
        name="trigger-engine",
    )
    await pool.open(wait=True, timeout=30)
    return pool
