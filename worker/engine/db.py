"""Connections to the engine's Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

from psycopg import AsyncConnection
from psycopg.pq import TransactionStatus
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


@asynccontextmanager
async def one_trip(pool: Pool, *, writes: bool = True) -> AsyncIterator[Conn]:
    """A transaction in one network round trip: BEGIN, the statements the block executes, and
    COMMIT go in one pipeline, sent together when the block ends; read the cursors after it.

    psycopg's own transactions cost a round trip for their BEGIN even in a pipeline, and one
    per statement outside one. The transaction is an explicit one, so ``SET LOCAL`` and a
    synchronous commit behave as usual; a fetch inside the block would only cost a round trip
    more. If a statement fails, the ones after it are skipped, the transaction is rolled back
    and the error raised when the block ends. ``writes=False`` (reads only): no BEGIN and
    COMMIT, two statements fewer to send (each read sees the data committed before it).
    """
    async with pool.connection() as conn:
        await conn.set_autocommit(True)  # no BEGIN of psycopg's: ours is in the pipeline
        try:
            async with conn.pipeline():
                if writes:
                    await conn.execute("BEGIN")
                yield conn
                if writes:
                    await conn.execute("COMMIT")
        finally:
            await end_trip(conn)


async def end_trip(conn: Conn) -> None:
    """Back to how the pool hands connections out: nothing open, autocommit off. A
    connection that cannot be (a trip cut short mid-flight) is closed: the pool replaces it."""
    try:
        if conn.pgconn.transaction_status in (TransactionStatus.INTRANS,
                                              TransactionStatus.INERROR):
            await conn.execute("ROLLBACK")
        await conn.set_autocommit(False)
    except Exception:
        await conn.close()


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
