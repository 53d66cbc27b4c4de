"""The supervisor against the real API (tests/conftest.py ``api_server``)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.runtime.live import FINAL, Worker, trigger, wait_final, worker_processes, zygotes
from tests.runtime.projects import write_project

TASKS = """
import asyncio
import os

from worker.sdk.logger import logger
from worker.sdk.task import task


@task(id="rt-ok")
async def ok(payload, ctx):
    logger.info("working", n=payload["n"])
    return {"double": payload["n"] * 2, "attempt": ctx.attempt.number}


@task(id="rt-flaky", retry={"max_attempts": 3, "min_timeout_ms": 100, "factor": 1,
                           "randomize": False})
async def flaky(payload, ctx):
    if ctx.attempt.number < 2:
        raise RuntimeError("first attempt fails")
    return ctx.attempt.number


@task(id="rt-crash", retry={"max_attempts": 2, "min_timeout_ms": 100, "randomize": False})
def crash(payload, ctx):
    if ctx.attempt.number == 1:
        os._exit(7)
    return "survived"


@task(id="rt-deaf", max_duration=1)
def deaf(payload):
    import signal
    import time
    signal.signal(signal.SIGALRM, signal.SIG_IGN)  # defeats the in-process interrupt
    time.sleep(30)


@task(id="rt-slow")
async def slow(payload):
    await asyncio.sleep(payload.get("seconds", 30))
    return "late"
"""

@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})


async def test_runs_retries_crash_and_clean_stop(api_server: Any, project_keys: dict[str, str],
                                                 project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=2)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            await w.wait_event("version_registered")
            ok_id = await trigger(client, "rt-ok", {"n": 21})
            flaky_id = await trigger(client, "rt-flaky", {})
            crash_id = await trigger(client, "rt-crash", {})

            run = await wait_final(client, ok_id)
            assert run["status"] == "COMPLETED", run
            assert run["output"] == {"double": 42, "attempt": 1}
            run = await wait_final(client, flaky_id)
            assert run["status"] == "COMPLETED" and run["output"] == 2, run
            run = await wait_final(client, crash_id)
            assert run["status"] == "COMPLETED" and run["output"] == "survived", run

            await w.wait_event("log", run_id=ok_id, message="working")
            finished = await w.wait_event("run_finished", run_id=ok_id)
            assert finished["ok"] is True and finished["task_id"] == "rt-ok"
            crashed = await w.wait_event("run_finished", run_id=crash_id, attempt=1)
            assert crashed["error"]["code"] == "TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE"
            procs = worker_processes()
            assert len(procs) >= 3  # zygote + 2 executors
        finally:
            await w.close()
    await asyncio.sleep(0.2)
    assert [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


async def test_graceful_stop_releases_running_runs(api_server: Any, project_keys: dict[str, str],
                                                   project: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_SHUTDOWN_GRACE", "0.5")
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        await w.wait_event("version_registered")
        slow_id = await trigger(client, "rt-slow", {"seconds": 30})
        await w.wait_event("run_started", run_id=slow_id)
        procs = worker_processes()
        await w.close()
        r = await client.get(f"/api/v3/runs/{slow_id}")
        assert r.json()["status"] not in FINAL  # handed back, not failed
    await asyncio.sleep(0.2)
    assert [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    # a new worker picks the released run up again
    w2 = Worker(project, api_server.url, key, concurrency=1)
    try:
        await w2.wait_event("run_started", run_id=slow_id)
    finally:
        await w2.close()


async def test_cancel_stops_the_run_via_lost_lease(api_server: Any, project_keys: dict[str, str],
                                                   project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            await w.wait_event("version_registered")
            slow_id = await trigger(client, "rt-slow", {"seconds": 60})
            await w.wait_event("run_started", run_id=slow_id)
            (await client.post(f"/api/v2/runs/{slow_id}/cancel")).raise_for_status()
            await w.wait_event("run_lost", run_id=slow_id, timeout=10)
            run = await wait_final(client, slow_id)
            assert run["status"] == "CANCELED"
            # the killed executor is replaced: the next run still executes
            ok_id = await trigger(client, "rt-ok", {"n": 1})
            assert (await wait_final(client, ok_id))["status"] == "COMPLETED"
            assert not [e for e in w.events if e["type"] == "run_finished"
                        and e["run_id"] == slow_id]
        finally:
            await w.close()


async def test_hot_reload(api_server: Any, project_keys: dict[str, str], project: Path) -> None:
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1, watch=True)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            first = await w.wait_event("version_registered")
            tasks_py = project / "trigger" / "tasks.py"
            await asyncio.sleep(0.5)  # let the watcher start
            tasks_py.write_text(tasks_py.read_text() + "\n\nbroken = 1 / 0\n")
            failed = await w.wait_event("reload_failed", timeout=30)
            assert "trigger/tasks.py" in failed["error"] and "ZeroDivisionError" in failed["error"]
            # the old version keeps serving
            ok_id = await trigger(client, "rt-ok", {"n": 2})
            assert (await wait_final(client, ok_id))["status"] == "COMPLETED"

            tasks_py.write_text(TASKS + """

@task(id="rt-new")
async def new_task(payload):
    return "new"
""")
            deadline = time.monotonic() + 30
            while len([e for e in w.events if e["type"] == "version_registered"]) < 2:
                assert time.monotonic() < deadline, w.events[-10:]
                await asyncio.sleep(0.05)
            second = [e for e in w.events if e["type"] == "version_registered"][-1]
            assert second["version_id"] != first["version_id"] and "rt-new" in second["tasks"]
            new_id = await trigger(client, "rt-new", {})
            run = await wait_final(client, new_id)
            assert run["status"] == "COMPLETED" and run["output"] == "new"
            # the old zygote goes away once idle
            deadline = time.monotonic() + 10
            while len(zygotes()) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert len(zygotes()) == 1
        finally:
            await w.close()


async def test_supervisor_kills_an_attempt_past_max_duration(
        api_server: Any, project_keys: dict[str, str], project: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIGGER_MAX_DURATION_GRACE", "0.5")
    key = project_keys["dev"]
    w = Worker(project, api_server.url, key, concurrency=1)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        try:
            await w.wait_event("version_registered")
            run_id = await trigger(client, "rt-deaf", {})
            run = await wait_final(client, run_id, timeout=20)
            assert run["status"] == "TIMED_OUT", run
            finished = await w.wait_event("run_finished", run_id=run_id)
            assert finished["error"]["code"] == "MAX_DURATION_EXCEEDED"
            assert finished["duration_ms"] < 5000
        finally:
            await w.close()
