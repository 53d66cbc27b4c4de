"""Under a drain, a finished run's completion waits (briefly) for others while runs leased
ahead still wait for an executor, so each ``/complete`` carries several; an idle worker reports
a completion at once (runtime/reporter.py, ``linger``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx

from tests.runtime.live import wait_final
from tests.runtime.projects import write_project
from worker.runtime.settings import WorkerSettings
from worker.runtime.supervisor import LINGER_RESERVE, Supervisor

TASKS = """
from worker.sdk.task import task


@task(id="cb-noop")
def noop(payload):
    return payload
"""

RUNS = 60


async def test_completions_share_calls_under_a_drain_and_go_at_once_when_idle(
        api_server: Any, project_keys: dict[str, str], tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})
    key = project_keys["dev"]
    settings = WorkerSettings(api_url=api_server.url, secret_key=key, concurrency=2,
                              prefetch=14, complete_linger_ms=200)
    stop = asyncio.Event()
    sup = Supervisor(project, settings, watch=False, on_event=None, stop=stop)
    calls: list[tuple[int, int]] = []  # (completions in the call, runs waiting then)
    complete = sup.api.complete

    async def counting(completions: list[Any], lease: Any = None) -> Any:
        if completions:
            calls.append((len(completions), len(sup.waiting)))
        return await complete(completions, lease)

    sup.api.complete = counting  # type: ignore[method-assign]
    worker = asyncio.create_task(sup.run())
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            while sup.versions.current is None or len(sup.versions.current.idle()) < 2:
                assert not worker.done(), worker
                await asyncio.sleep(0.02)
            # idle: one run's completion is not held back by the (long) linger
            reply = await client.post("/api/v1/tasks/cb-noop/trigger", json={"payload": 0})
            reply.raise_for_status()
            started = time.monotonic()
            run = await wait_final(client, str(reply.json()["id"]))
            assert run["status"] == "COMPLETED"
            assert time.monotonic() - started < 5
            assert calls == [(1, 0)]
            calls.clear()
            reply = await client.post("/api/v1/tasks/cb-noop/batch", json={
                "items": [{"payload": n} for n in range(RUNS)]})
            reply.raise_for_status()
            for n, item in enumerate(reply.json()["runs"]):
                run = await wait_final(client, str(item["id"]))
                assert run["status"] == "COMPLETED" and run["output"] == n, run
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
    assert sum(n for n, _ in calls) == RUNS
    # while more than two runs waited for an executor no call went (the linger, 200 ms here,
    # never ran out): the batches grew until the executors were about to run out of runs
    assert all(waiting <= LINGER_RESERVE for _, waiting in calls), calls
    assert len(calls) <= RUNS // 3, calls
    assert max(n for n, _ in calls) >= 4, calls
