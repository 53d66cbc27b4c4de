"""Executor-level lifecycle: cancel, on_cancel, locals, attempt hooks, OOM, logs, pool sizing.

Driven through a real zygote and real executors (tests/runtime/harness.py), without the API.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from tests.runtime.harness import Harness, make_run
from tests.runtime.projects import write_project

TASKS = """
import asyncio
import time

from worker.sdk import attempt_hooks
from worker.sdk.context import locals
from worker.sdk.errors import OutOfMemoryError
from worker.sdk.logger import logger
from worker.sdk.task import task

DB = locals.create("db")
STATE = {"started": 0}


async def started(ctx):
    STATE["started"] += 1


async def ending(ctx):
    return {"metadata": {"run": ctx.run.id, "started": STATE["started"]}, "ok": "ignored"}


attempt_hooks.on_attempt_start(started)
attempt_hooks.on_attempt_end(ending)


async def connect(payload, next):
    logger.info("before:" + repr(locals.get(DB)))
    locals.set(DB, "conn-" + payload["tag"])
    await next()


@task(id="uses-locals", middleware=connect)
async def uses_locals(payload, signal):
    return {"db": locals.get_or_throw(DB), "aborted": signal.aborted}


async def note_cancel(run_promise, ctx, signal):
    logger.info(f"on_cancel:{ctx.run.id}:{signal.aborted}:{signal.reason}")
    logger.info(f"run_promise:{await run_promise}")


@task(id="cancel-me", on_cancel=note_cancel)
async def cancel_me(payload):
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        logger.info("task saw CancelledError")
        raise


@task(id="cancel-spin", on_cancel=note_cancel)
def cancel_spin(payload):
    end = time.time() + 30
    while time.time() < end:
        pass


@task(id="oom", retry={"max_attempts": 3, "out_of_memory": {"machine": "large-1x"}},
      on_failure=lambda: logger.info("on_failure"))
def oom(payload):
    raise OutOfMemoryError("too big")


@task(id="memory-error", on_failure=lambda: logger.info("on_failure"))
def memory_error(payload):
    raise MemoryError()


@task(id="chatty")
def chatty(payload):
    logger.debug("debug line")
    logger.info("info line", password="hunter2", nested={"api_key": "k", "n": 1},
                items=[{"token": "t"}])
    logger.warn("warn line", authorization="Bearer x", user="ada")
    print("printed line")
    return None


HOG = []


@task(id="grow")
def grow(payload):
    HOG.append(b"x" * (payload["mib"] << 20))
    return None
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})


async def test_locals_signal_and_attempt_hooks(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("uses-locals", {"tag": "a"})
        assert orjson.loads(c["output"]) == {"db": "conn-a", "aborted": False}
        # attempt_ending's result is merged, but cannot overwrite the completion's own keys
        assert c["metadata"] == {"run": "run_1", "started": 1} and c["ok"] is True
        c = await h.execute("uses-locals", {"tag": "b"}, run_id="run_2")
        assert orjson.loads(c["output"])["db"] == "conn-b"
        assert c["metadata"] == {"run": "run_2", "started": 2}  # same warm executor
        # every attempt starts with empty locals
        assert h.messages() == ["before:None", "before:None"]


async def test_cancel_runs_on_cancel_and_cancels_the_task(project: Path) -> None:
    async with Harness(project) as h:
        assert h.pool
        ex = await h.idle()
        job = asyncio.create_task(h.pool.execute(ex, make_run("cancel-me", {})))
        await asyncio.sleep(0.5)
        ex.cancel()
        frame = await asyncio.wait_for(job, 10)
        c = frame["completion"]
        assert c["ok"] is False and c["error"]["code"] == "TASK_RUN_CANCELLED"
        assert frame["recycle"] is True
        messages = h.messages()
        assert "on_cancel:run_1:True:canceled" in messages
        assert "task saw CancelledError" in messages
        assert "run_promise:None" in messages


async def test_cancel_reaches_a_sync_task_that_never_yields(project: Path) -> None:
    async with Harness(project) as h:
        assert h.pool
        ex = await h.idle()
        job = asyncio.create_task(h.pool.execute(ex, make_run("cancel-spin", {})))
        await asyncio.sleep(0.5)
        ex.cancel()
        frame = await asyncio.wait_for(job, 10)
        assert frame["completion"]["error"]["code"] == "TASK_RUN_CANCELLED"
        assert "on_cancel:run_1:True:canceled" in h.messages()


async def test_out_of_memory_errors(project: Path) -> None:
    async with Harness(project) as h:
        # retry.out_of_memory.machine with attempts left: retried on the bigger machine
        c = await h.execute("oom", {}, retry={"max_attempts": 3,
                                              "out_of_memory": {"machine": "large-1x"}})
        assert c["error"]["code"] == "TASK_PROCESS_OOM_KILLED"
        assert c["retry_machine"] == "large-1x" and c["retry"] is None
        assert "on_failure" not in h.messages()
        # already on that machine: final, with on_failure
        c = await h.execute("oom", {}, machine="large-1x",
                            retry={"max_attempts": 3, "out_of_memory": {"machine": "large-1x"}})
        assert "retry_machine" not in c and c["skipped_retrying"] is True
        assert "on_failure" in h.messages()
        c = await h.execute("memory-error", {})
        assert c["error"]["code"] == "TASK_PROCESS_OOM_KILLED" and c["skipped_retrying"] is True


async def test_logs_levels_redaction_and_print(tmp_path: Path) -> None:
    config = """
        from worker.sdk.config import define_config
        config = define_config(project="proj", dirs=["trigger"], log_level="info")
    """
    root = write_project(tmp_path / "p", {"trigger/tasks.py": TASKS}, config=config)
    async with Harness(root) as h:
        await h.execute("chatty", None)
        by_message = {f["message"]: f for f in h.logs}
        assert "debug line" not in by_message  # below log_level
        info = by_message["info line"]
        assert info["level"] == "info" and info["time"]
        assert info["attributes"] == {"password": "[REDACTED]",
                                      "nested": {"api_key": "[REDACTED]", "n": 1},
                                      "items": [{"token": "[REDACTED]"}]}
        assert by_message["warn line"]["attributes"] == {"authorization": "[REDACTED]",
                                                         "user": "ada"}
        assert by_message["printed line"]["level"] == "info"

    config = config.replace('"info"', '"error"')
    root = write_project(tmp_path / "q", {"trigger/tasks.py": TASKS}, config=config)
    async with Harness(root) as h:
        await h.execute("chatty", None)
        assert h.messages() == ["printed line"]  # console output is always captured


async def test_memory_recycling_does_not_loop(project: Path) -> None:
    # A limit below what a fresh executor weighs: warn once, keep the executor.
    async with Harness(project, max_memory_mib=1) as h:
        pids = set()
        for i in range(3):
            ex = await h.idle()
            pids.add(ex.pid)
            await h.execute("chatty", None, run_id=f"run_{i}")
        assert len(pids) == 1
        assert len(h.warnings) == 1 and "max_memory_per_process" in h.warnings[0]


async def test_memory_recycling_after_growth(project: Path) -> None:
    async with Harness(project) as h:
        assert h.pool
        ex = await h.idle()
        # a limit well above a fresh executor, below one that kept 100 MiB
        h.pool.max_memory = ex.baseline_rss + (60 << 20)
        await h.execute("grow", {"mib": 100})
        assert h.pool.recycled["memory"] == 1
        fresh = await h.idle()
        assert fresh.pid != ex.pid
        await h.execute("chatty", None)
        assert (await h.idle()).pid == fresh.pid and h.warnings == []


async def test_idle_executors_are_trimmed_and_the_pool_grows_back(project: Path) -> None:
    async with Harness(project, size=3, idle_timeout=0.2, min_warm=1) as h:
        assert h.pool
        while len(h.pool.idle()) < 3:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        h.pool.trim()
        while len(h.pool.executors) > 1:
            await asyncio.sleep(0.01)
        assert h.pool.recycled["idle"] == 2
        # three runs at once: the pool forks back up to its size
        runs = [make_run("uses-locals", {"tag": str(i)}, run_id=f"r{i}") for i in range(3)]
        exs = [await h.pool.acquire(run) for run in runs]
        assert len({ex.pid for ex in exs}) == 3
        jobs = [h.pool.execute(ex, run) for ex, run in zip(exs, runs, strict=True)]
        frames = await asyncio.gather(*jobs)
        assert all(f["completion"]["ok"] for f in frames)
