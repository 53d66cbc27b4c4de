"""Issue 19, item 1 in `trigger dev`: a run checkpointed on a duration wait is not stranded by
a hot reload that changes its task file (docs/run-states.md, "Versions"). A real API, a
watching supervisor, real zygotes and executors."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.runtime.live import Worker, trigger, wait_final
from tests.runtime.projects import write_project

TASKS = """
from worker import task, wait


@task(id="nap-reload")
async def nap(payload, ctx):
    await wait.for_(seconds=6)        # over 5 s: checkpoints at once
    return "v1"
"""


async def test_a_waiting_run_completes_across_a_hot_reload(
    api_server: Any, project_keys: dict[str, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    project = write_project(tmp_path / "proj", {"trigger/__init__.py": "",
                                                "trigger/tasks.py": TASKS})
    key = project_keys["dev"]
    # the executors' SDK (the durable wait) talks to the API
    monkeypatch.setenv("TRIGGER_API_URL", api_server.url)
    monkeypatch.setenv("TRIGGER_SECRET_KEY", key)
    w = Worker(project, api_server.url, key, concurrency=1, watch=True)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            first = await w.wait_event("version_registered")
            await asyncio.sleep(0.5)  # let the watcher start
            run_id = await trigger(client, "nap-reload", {})
            deadline = time.monotonic() + 20
            while (run := (await client.get(f"/api/v3/runs/{run_id}")).json())["status"] != \
                    "WAITING":
                assert time.monotonic() < deadline, run
                await asyncio.sleep(0.05)
            tasks_py = project / "trigger" / "tasks.py"
            tasks_py.write_text(TASKS.replace('return "v1"', 'return "v2"'))
            deadline = time.monotonic() + 30
            while len([e for e in w.events if e["type"] == "version_registered"]) < 2:
                assert time.monotonic() < deadline, w.events[-10:]
                await asyncio.sleep(0.05)
            second = [e for e in w.events if e["type"] == "version_registered"][-1]
            assert second["version_id"] != first["version_id"]
            run = await wait_final(client, run_id, timeout=30)
            # resumed on the code that is served now (the old version is no longer served)
            assert run["status"] == "COMPLETED" and run["output"] == "v2", run
            assert run["version"] == second["version"] and run["attemptCount"] == 1
        finally:
            await w.close()
