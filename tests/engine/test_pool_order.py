"""The engine's connection pool hands out its most recently returned idle connection first
(engine/db.py ``NewestFirstPool``): sequential requests keep using the same warm connection
instead of going round all of them. Against a real Postgres; it also catches a psycopg_pool
upgrade that changes what the pool relies on."""

from __future__ import annotations

import asyncio

from worker.engine.db import open_pool


async def test_the_newest_idle_connection_is_handed_out_first(database_url: str) -> None:
    pool = await open_pool(database_url, min_size=4, max_size=4)
    try:
        async with asyncio.timeout(10):
            while pool.get_stats().get("pool_available", 0) < 4:
                await asyncio.sleep(0.01)
        pids = []
        for _ in range(6):  # one at a time: always the same one
            async with pool.connection() as conn:
                pids.append(conn.info.backend_pid)
        assert len(set(pids)) == 1, pids
        # three held at once, returned in an order: the next take is the last returned
        held = [await pool.getconn() for _ in range(3)]
        order = [held[1], held[0], held[2]]
        for conn in order:
            await pool.putconn(conn)
        async with pool.connection() as conn:
            assert conn is order[-1]
        # all four at once still work (nothing is lost by the turn of the deque)
        async def use() -> int:
            async with pool.connection() as conn:
                await asyncio.sleep(0.05)
                return conn.info.backend_pid
        assert len(set(await asyncio.gather(*(use() for _ in range(4))))) == 4
    finally:
        await pool.close()
