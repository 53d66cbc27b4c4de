"""Connections to the engine's Postgres."""

from __future__ import annotations

from collections import deque
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
async def one_trip(pool: Pool, *, begin: bool = False) -> AsyncIterator[Conn]:
    """A transaction in one network round trip: the statements the block executes go in one
    pipeline, sent when the block ends, with the Sync that ends it; read the cursors after it.

    The statements before a Sync are one transaction (the extended protocol's implicit one):
    committed at the Sync (synchronously: a 2xx promises it), rolled back entirely if one of
    them fails (the ones after it are skipped; the error is raised when the block ends). Each
    statement takes its own snapshot, as in any READ COMMITTED transaction, so a row lock taken
    by one is seen by the next. That costs two statements fewer than psycopg's BEGIN and
    COMMIT (≈ 60 µs of the API's CPU and some of Postgres', per trip: docs/benchmarks.md).
    ``begin=True`` sends BEGIN and COMMIT around the block: only for ``SET LOCAL``, which
    Postgres accepts only in an explicit transaction block. A fetch inside the block would
    only cost a round trip more.
    """
    async with pool.connection() as conn:
        await conn.set_autocommit(True)  # no BEGIN of psycopg's: the pipeline has its own
        try:
            async with conn.pipeline():
                if begin:
                    await conn.execute("BEGIN")
                yield conn
                if begin:
                    await conn.execute("COMMIT")
        finally:
            await end_trip(conn)


async def one_statement(pool: Pool, query: str, params: Params | None = None) -> list[Row]:
    """One statement as its own transaction (autocommit: a write commits synchronously) in one
    round trip: its rows. Cheaper than a one-statement :func:`one_trip` (no pipeline: one send
    with its Sync instead of two, one wait instead of three)."""
    async with pool.connection() as conn:
        await conn.set_autocommit(True)
        try:
            return await (await conn.execute(query, params)).fetchall()
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


class NewestFirstPool(AsyncConnectionPool[Conn]):
    """psycopg_pool's pool, handing out its most recently returned idle connection first.

    psycopg_pool hands them out oldest first: sequential requests go round all its connections,
    and each connection's statements (prepared on their second use, per connection) and its
    Postgres backend (catalog and plan caches, and the CPU caches of its process) stay cold for
    the first ~50 requests after a start, and the backends take turns on the CPU after that.
    Newest first, the few connections in use stay warm and the others idle (and are the ones
    the pool closes when it shrinks). Trigger → body starts p50 1.87 / 2.00 → 1.60 / 1.70 ms,
    result visible 3.44 / 3.68 → 3.03 / 3.17 ms (docs/benchmarks.md, fifth round).

    It turns psycopg_pool's idle deque (``_pool``, psycopg_pool 3.2 to 3.3) before each take:
    tests/engine/test_pool_order.py checks the order, so an upgrade that changes it is seen.
    """

    async def _get_ready_connection(self, timeout: float | None) -> Conn | None:
        idle = getattr(self, "_pool", None)  # another psycopg_pool: its own order, no failure
        if isinstance(idle, deque) and len(idle) > 1:
            idle.rotate(1)  # the newest (returned last, at the right end) to where it is taken
        return await super()._get_ready_connection(timeout)


async def open_pool(url: str, *, min_size: int = 2, max_size: int = 10) -> Pool:
    """A pool of dict-row connections; statements are prepared after their first use."""

    async def configure(conn: Conn) -> None:
        conn.prepare_threshold = 1
        # Short OLTP statements only: JIT compilation costs more than it ever saves, and it
        # kicks in when a big queue inflates cost estimates.
        await conn.execute("SET jit = off")
        await conn.commit()

    pool: Pool = NewestFirstPool(
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
