"""Complete-and-lease-next from the supervisor's side (docs/protocol.md, "Complete and lease
next"): runs come back with completions, are started like dequeued runs, and the long-poll and
``/complete`` together never lease more runs than the replica has slots."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtime.live import wait_final
from tests.runtime.projects import write_project
from worker.runtime.settings import WorkerSettings
from worker.runtime.supervisor import Supervisor

TASKS = """
import asyncio

from worker.sdk.task import task


@task(id="cl-work")
async def work(payload):
    await asyncio.sleep(0.01)
    return payload["n"]
"""

CONCURRENCY, PREFETCH, RUNS = 2, 1, 40


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})


async def _api_leases_on_complete(client: httpx.AsyncClient, version_id: str) -> bool:
    """Does this API answer a ``lease`` with ``runs``? (an older one ignores the field; asked
    while nothing is queued, so it leases nothing)"""
    reply = await client.post("/engine/v1/worker/complete", json={
        "instance_id": str(uuid.uuid4()), "completions": [],
        "lease": {"versions": [version_id], "max_runs": 1}})
    reply.raise_for_status()
    return "runs" in reply.json()


async def test_drain_leases_on_complete_within_the_slots(
        api_server: Any, project_keys: dict[str, str], project: Path) -> None:
    key = project_keys["dev"]
    settings = WorkerSettings(api_url=api_server.url, secret_key=key, concurrency=CONCURRENCY,
                              prefetch=PREFETCH)
    held: list[int] = []
    sup: Supervisor | None = None

    def on_event(event: dict[str, Any]) -> None:
        # emitted from inside the supervisor, right after runs were added or started
        assert sup is not None
        held.append(len(sup.runs.held()))

    stop = asyncio.Event()
    sup = Supervisor(project, settings, watch=False, on_event=on_event, stop=stop)
    worker = asyncio.create_task(sup.run())
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            while sup.versions.current is None or not sup.versions.current.executors:
                assert not worker.done(), worker
                await asyncio.sleep(0.02)
            leases = await _api_leases_on_complete(client, sup.versions.current.version_id)
            reply = await client.post("/api/v1/tasks/cl-work/batch", json={
                "items": [{"payload": {"n": n}} for n in range(RUNS)]})
            reply.raise_for_status()
            ids = [str(r["id"]) for r in reply.json()["runs"]]
            for n, run_id in enumerate(ids):
                run = await wait_final(client, run_id)
                assert run["status"] == "COMPLETED", run
                assert run["output"] == n
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)
    assert held and max(held) <= CONCURRENCY + PREFETCH, max(held)
    assert sup.slots.reserved == 0 and sup.slots.leasing == 0
    if leases:
        # the runs queued behind the first ones came back with completions
        assert sup.slots.complete_leases and sup.slots.leased_on_complete > 0
    else:
        # an API that ignores the lease: the long-poll alone leased, and it still drained
        assert sup.slots.leased_on_complete == 0
