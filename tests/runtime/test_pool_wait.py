"""A run leased ahead of a free executor (prefetch) waits for a busy one however long its run
takes: the pool's acquire timeout is for a pool that cannot get an executor at all."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.runtime.harness import Harness, make_run
from tests.runtime.projects import write_project

TASKS = """
import asyncio

from worker.sdk.task import task


@task(id="pw-slow")
async def slow(payload):
    await asyncio.sleep(payload["seconds"])
    return payload["seconds"]
"""


async def test_a_prefetched_run_outwaits_the_acquire_timeout(tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})
    async with Harness(project, size=1) as h:
        assert h.pool
        first = make_run("pw-slow", {"seconds": 2.5}, run_id="run_first")
        ex = await h.pool.acquire(first)
        h.pool.start(ex, first)  # written at once, as the supervisor does
        # the only executor is busy for 2.5 s: past this acquire's 0.2 s timeout and its 1 s checks
        second = make_run("pw-slow", {"seconds": 0}, run_id="run_second")
        waiting = asyncio.ensure_future(h.pool.acquire(second, timeout=0.2))
        frame = await h.pool.finish(ex)
        assert frame["completion"]["ok"]
        assert await asyncio.wait_for(waiting, 10) is ex
        h.pool.start(ex, second)
        assert (await h.pool.finish(ex))["completion"]["output"] == "0"
