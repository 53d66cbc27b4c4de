"""A worker replica against the real API: cancel, OOM, CPU-bound leases, shutdown, versions."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.runtime.live import FINAL, Worker, trigger, wait_final
from tests.runtime.projects import write_project

TASKS = """
import asyncio
import os
import time
from pathlib import Path

from worker.sdk.task import task

MARKS = Path(os.environ["TEST_MARKS_DIR"])


def mark(name, text="1"):
    (MARKS / name).write_text(text)


async def on_cancel(ctx, signal):
    mark("on_cancel", f"{ctx.run.id}:{signal.reason}")


@task(id="lc-wait", on_cancel=on_cancel)
async def wait(payload):
    try:
        await asyncio.sleep(payload.get("seconds", 60))
    except asyncio.CancelledError:
        mark("task_cancelled")
        raise
    return "waited"


@task(id="lc-stubborn")
async def stubborn(payload):
    mark("stubborn_pid", str(os.getpid()))
    while True:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass


@task(id="lc-spin")
def spin(payload):
    # CPU-bound, never yields: longer than the 3 s lease of the test API
    end = time.time() + payload["seconds"]
    n = 0
    while time.time() < end:
        n += 1
    return "spun"


@task(id="lc-hog", machine="micro", retry={"max_attempts": 2})
async def hog(payload):
    chunks = []
    for _ in range(60):  # up to 600 MiB, well past micro's 256 MiB
        chunks.append(b"x" * (10 << 20))
        await asyncio.sleep(0.02)
    return "survived"


@task(id="lc-version")
async def version(payload):
    await asyncio.sleep(payload.get("seconds", 0))
    return "v1"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setenv("TEST_MARKS_DIR", str(marks))
    return write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})


def client_for(api_server: Any, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=api_server.url, timeout=30,
                             headers={"Authorization": f"Bearer {key}"})


async def wait_path(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    # the file can exist before its writer has written to it: wait for content
    while not path.exists() or not path.read_text():
        assert time.monotonic() < deadline, f"{path} never appeared"
        await asyncio.sleep(0.02)
    return path.read_text()


def _alive(pid: int) -> bool:
    """Running and not a zombie (a process may exit between two psutil calls)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_cancel_while_running(api_server: Any, project_keys: dict[str, str],
                                    project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_CANCEL_GRACE", "0.5")
    marks = project.parent / "marks"
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with client_for(api_server, key) as client:
        try:
            await w.wait_event("version_registered")
            run_id = await trigger(client, "lc-wait", {})
            await w.wait_event("run_started", run_id=run_id)
            (await client.post(f"/api/v2/runs/{run_id}/cancel")).raise_for_status()
            assert (await wait_final(client, run_id))["status"] == "CANCELED"
            # on_cancel ran and the asyncio cancellation reached the task
            assert await wait_path(marks / "on_cancel") == f"{run_id}:canceled"
            await wait_path(marks / "task_cancelled")

            # a task that swallows the cancellation is killed after the grace period
            stubborn_id = await trigger(client, "lc-stubborn", {})
            pid = int(await wait_path(marks / "stubborn_pid"))
            (await client.post(f"/api/v2/runs/{stubborn_id}/cancel")).raise_for_status()
            await w.wait_event("run_lost", run_id=stubborn_id, timeout=10)
            deadline = time.monotonic() + 10
            while _alive(pid):
                assert time.monotonic() < deadline, "the stubborn executor was not killed"
                await asyncio.sleep(0.05)
            # the pool replaced it: the next run executes
            ok_id = await trigger(client, "lc-version", {})
            assert (await wait_final(client, ok_id))["status"] == "COMPLETED"
            assert not [e for e in w.events if e["type"] == "run_finished"
                        and e["run_id"] in (run_id, stubborn_id)]
        finally:
            await w.close()


async def test_cpu_bound_task_keeps_its_lease(api_server: Any, project_keys: dict[str, str],
                                              project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with client_for(api_server, key) as client:
        try:
            await w.wait_event("version_registered")
            run_id = await trigger(client, "lc-spin", {"seconds": 4.5})  # > the 3 s lease
            run = await wait_final(client, run_id)
            assert run["status"] == "COMPLETED" and run["output"] == "spun", run
            assert len(run.get("attempts") or [1]) == 1
            assert not [e for e in w.events if e["type"] == "run_lost"]
        finally:
            await w.close()


async def test_machine_memory_is_enforced(api_server: Any, project_keys: dict[str, str],
                                          project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with client_for(api_server, key) as client:
        try:
            await w.wait_event("version_registered")
            run_id = await trigger(client, "lc-hog", {})
            run = await wait_final(client, run_id)
            assert run["status"] == "CRASHED", run
            assert run["error"]["code"] == "TASK_PROCESS_OOM_KILLED"
            assert "micro" in run["error"]["message"]
            ok_id = await trigger(client, "lc-version", {})
            assert (await wait_final(client, ok_id))["status"] == "COMPLETED"
        finally:
            await w.close()


async def test_graceful_stop_lets_running_attempts_finish(
        api_server: Any, project_keys: dict[str, str], project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with client_for(api_server, key) as client:
        await w.wait_event("version_registered")
        run_id = await trigger(client, "lc-version", {"seconds": 1.0})
        await w.wait_event("run_started", run_id=run_id)
        await w.close()  # grace (10 s) is longer than the run
        run = await wait_final(client, run_id, timeout=5)
        assert run["status"] == "COMPLETED" and run["output"] == "v1"


async def test_second_signal_stops_at_once(api_server: Any, project_keys: dict[str, str],
                                           project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with client_for(api_server, key) as client:
        await w.wait_event("version_registered")
        run_id = await trigger(client, "lc-wait", {"seconds": 60})
        await w.wait_event("run_started", run_id=run_id)
        w.stop.set()
        await w.wait_event("stopping")
        w.force.set()
        await asyncio.wait_for(w.task, 8)  # far less than the 10 s grace
        assert any(e["type"] == "stopping_now" for e in w.events)
        run = (await client.get(f"/api/v3/runs/{run_id}")).json()
        assert run["status"] not in FINAL  # handed back at once, for another replica


async def test_versions_in_flight_runs_finish_on_old_code(
        api_server: Any, project_keys: dict[str, str], project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=2, watch=True)
    async with client_for(api_server, key) as client:
        try:
            await w.wait_event("version_registered")
            await w.wait_event("ready")
            old_id = await trigger(client, "lc-version", {"seconds": 2.5})
            await w.wait_event("run_started", run_id=old_id)
            tasks_py = project / "trigger" / "tasks.py"
            tasks_py.write_text(TASKS.replace('return "v1"', 'return "v2"'))
            reloaded = await w.wait_event("reloaded", timeout=20)
            assert reloaded["ms"] is not None and reloaded["ms"] > 0
            new_id = await trigger(client, "lc-version", {})
            new = await wait_final(client, new_id)
            assert new["output"] == "v2", new
            old = await wait_final(client, old_id)
            assert old["status"] == "COMPLETED" and old["output"] == "v1", old
        finally:
            await w.close()
