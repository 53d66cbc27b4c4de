"""The zygote + executor pair driven directly: runs, hooks, retries, timeouts, crashes."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import orjson
import pytest

from tests.runtime.harness import Harness
from tests.runtime.projects import write_project
from worker.runtime.pool import ExecutorDied
from worker.runtime.zygote_process import DiscoveryFailed

TASKS = """
import asyncio
import os
import time

from pydantic import BaseModel

from worker.sdk.errors import AbortTaskRunError, CompleteTaskWithOutput
from worker.sdk.logger import logger
from worker.sdk.task import schema_task, task

from ._db import VALUE
from trigger._db import VALUE as SAME


def rec(name):
    def hook(**kw):
        logger.info("hook:" + name)
    return hook


async def mw(payload, ctx, next):
    logger.info("hook:task_middleware:before")
    await next()
    logger.info("hook:task_middleware:after")


def init(payload):
    logger.info("hook:task_init")
    return {"db": "conn"}


@task(id="hello")
async def hello(payload, ctx):
    logger.info("hello", who=payload["who"])
    print("printed", ctx.run.id, ctx.attempt.number, ctx.environment.slug)
    return {"v": VALUE + SAME, "run": ctx.run.id, "task": ctx.task.id}


@task(id="sync-hello")
def sync_hello(payload):
    return payload * 2


@task(id="hooks", middleware=mw, init=init, on_start=rec("task_on_start"),
      on_start_attempt=rec("task_on_start_attempt"), on_success=rec("task_on_success"),
      on_failure=rec("task_on_failure"), on_complete=rec("task_on_complete"),
      cleanup=rec("task_cleanup"))
async def hooks(payload, ctx, init):
    logger.info("hook:run:" + init["db"] + ":" + init["global"])
    if payload.get("fail"):
        raise ValueError("boom")
    return "ok"


def skip(error, retry_delay_in_ms):
    logger.info(f"catch:{type(error).__name__}:{retry_delay_in_ms}")
    return {"skip_retrying": True}


@task(id="caught", catch_error=skip, on_failure=rec("task_on_failure"))
def caught(payload):
    raise KeyError("x")


def bad_catch(error):
    raise RuntimeError("catch broke")


@task(id="bad-catch", catch_error=bad_catch)
def bad_catch_task(payload):
    raise KeyError("x")


def delay_it(error):
    return {"retry_delay_in_ms": 1234}


@task(id="delayed", catch_error=delay_it)
def delayed(payload):
    raise KeyError("x")


@task(id="abort", on_failure=rec("task_on_failure"))
async def abort(payload):
    raise AbortTaskRunError("no")


@task(id="early")
async def early(payload):
    raise CompleteTaskWithOutput({"early": True})


class In(BaseModel):
    n: int


@schema_task(id="typed", schema=In)
async def typed(payload: In):
    return payload.n + 1


@task(id="sleepy", on_failure=rec("task_on_failure"), cleanup=rec("task_cleanup"))
async def sleepy(payload):
    try:
        await asyncio.sleep(30)
    finally:
        logger.info("finally-ran")


@task(id="spin", max_duration=1, on_failure=rec("task_on_failure"))
def spin(payload):
    end = time.time() + 30
    n = 0
    while time.time() < end:
        n += 1


@task(id="stubborn", max_duration=1)
def stubborn(payload):
    end = time.time() + 30
    try:
        while time.time() < end:
            pass
    except BaseException:
        logger.info("swallowed")
    while time.time() < end:  # keeps burning CPU after swallowing the first interrupt
        pass


@task(id="exit3")
def exit3(payload):
    os._exit(3)


@task(id="pid")
async def pid(payload):
    return os.getpid()


@task(id="hang")
async def hang(payload):
    await asyncio.sleep(60)
"""

CONFIG = """
from worker.sdk.config import define_config
from worker.sdk.logger import logger


def g(name):
    def hook(**kw):
        logger.info("hook:" + name)
    return hook


async def gmw(next):
    logger.info("hook:global_middleware:before")
    await next()
    logger.info("hook:global_middleware:after")


def ginit(ctx):
    logger.info("hook:global_init")
    return {"global": "g", "db": "overridden"}


config = define_config(
    project="proj", dirs=["trigger"], max_duration=60, middleware=gmw, init=ginit,
    on_start=g("global_on_start"), on_start_attempt=g("global_on_start_attempt"),
    on_success=g("global_on_success"), on_failure=g("global_on_failure"),
    on_complete=g("global_on_complete"), cleanup=g("global_cleanup"),
)
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"trigger/_db.py": "VALUE = 21\n",
                                             "trigger/tasks.py": TASKS}, config=CONFIG)


def hooks_of(h: Harness) -> list[str]:
    return [m[len("hook:"):] for m in h.messages() if m.startswith("hook:")]


async def test_success_ctx_logs_and_print(project: Path) -> None:
    async with Harness(project) as h:
        assert {t["id"] for t in h.manifest["tasks"]} >= {"hello", "hooks", "spin"}
        c = await h.execute("hello", {"who": "you"})
        assert c["ok"] is True, c
        assert orjson.loads(c["output"]) == {"v": 42, "run": "run_1", "task": "hello"}
        assert c["output_type"] == "application/json"
        logs = [(f["level"], f["message"], f["attributes"]) for f in h.logs]
        assert ("info", "hello", {"who": "you"}) in logs
        assert ("info", "printed run_1 1 dev", {}) in logs
        assert all(f["run_id"] == "run_1" and f["attempt_number"] == 1 for f in h.logs)
        c = await h.execute("sync-hello", 21)
        assert orjson.loads(c["output"]) == 42


async def test_hook_order_success(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("hooks", {})
        assert c["ok"], c
        assert hooks_of(h) == [
            "global_middleware:before", "task_middleware:before",
            "global_init", "task_init",
            "global_on_start", "task_on_start",
            "global_on_start_attempt", "task_on_start_attempt",
            "run:conn:g",
            "global_on_success", "task_on_success",
            "global_on_complete", "task_on_complete",
            "global_cleanup", "task_cleanup",
            "task_middleware:after", "global_middleware:after",
        ]


async def test_hook_order_retry_then_final_failure(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("hooks", {"fail": True}, attempt=2, max_attempts=3)
        assert c["ok"] is False
        assert c["error"]["type"] == "BUILT_IN_ERROR" and c["error"]["name"] == "ValueError"
        assert c["error"]["message"] == "boom" and "raise ValueError" in c["error"]["stackTrace"]
        # attempt 2 of 3: retried with the formula (1000 * 2**1), no on_start, no on_failure
        assert c["retry"] == {"delay_ms": 2000} and c["skipped_retrying"] is False
        order = hooks_of(h)
        assert "global_on_start" not in order and "task_on_failure" not in order
        assert order[-4:] == ["global_cleanup", "task_cleanup",
                              "task_middleware:after", "global_middleware:after"]
        h.logs.clear()
        c = await h.execute("hooks", {"fail": True}, attempt=3, max_attempts=3)
        assert c["retry"] is None and c["skipped_retrying"] is True
        order = hooks_of(h)
        i = order.index("global_on_failure")
        assert order[i:i + 6] == ["global_on_failure", "task_on_failure", "global_on_complete",
                                  "task_on_complete", "global_cleanup", "task_cleanup"]


async def test_catch_error_abort_and_complete_with_output(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("caught", None)
        assert c["skipped_retrying"] is True and c["retry"] is None
        assert "catch:KeyError:1000" in h.messages()
        assert "hook:task_on_failure" in h.messages()

        c = await h.execute("bad-catch", None)
        assert c["error"]["code"] == "HANDLE_ERROR_ERROR" and c["skipped_retrying"] is True

        c = await h.execute("delayed", None)
        assert c["retry"] == {"delay_ms": 1234} and c["skipped_retrying"] is False

        h.logs.clear()
        c = await h.execute("abort", None)
        assert c["skipped_retrying"] is True and c["error"]["name"] == "AbortTaskRunError"
        assert "hook:task_on_failure" in h.messages()

        c = await h.execute("early", None)
        assert c["ok"] is True and orjson.loads(c["output"]) == {"early": True}


async def test_schema_task_and_unknown_task(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("typed", {"n": 1})
        assert c["ok"] and orjson.loads(c["output"]) == 2
        c = await h.execute("typed", {"n": "not a number"})
        assert c["error"]["code"] == "TASK_INPUT_ERROR" and c["skipped_retrying"] is True
        c = await h.execute("nope", None)
        assert c["error"]["code"] == "COULD_NOT_FIND_TASK"


async def test_max_duration_async_task(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("sleepy", None, max_duration=0.5)
        assert c["ok"] is False
        assert c["error"]["code"] == "MAX_DURATION_EXCEEDED" and c["skipped_retrying"] is True
        assert 400 <= c["duration_ms"] < 3000
        assert "finally-ran" in h.messages()
        assert "hook:task_on_failure" not in h.messages()
        assert "hook:task_cleanup" not in h.messages()


async def test_max_duration_cpu_bound_sync_task(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("spin", None)  # max_duration=1 from the task
        assert c["error"]["code"] == "MAX_DURATION_EXCEEDED", c
        assert 900 <= c["duration_ms"] < 3000
        assert "hook:task_on_failure" not in h.messages()
        # code that swallows the interrupt is interrupted again until it gives up
        c = await h.execute("stubborn", None)
        assert c["error"]["code"] == "MAX_DURATION_EXCEEDED", c
        assert "swallowed" in h.messages() and c["duration_ms"] < 4000


async def test_sigkill_executor_is_reported_and_replaced(project: Path) -> None:
    async with Harness(project) as h:
        assert h.pool
        c = await h.execute("pid", None)
        pid = orjson.loads(c["output"])
        ex = await h.idle()
        assert ex.pid == pid
        job = asyncio.create_task(h.pool.execute(ex, __import__(
            "tests.runtime.harness", fromlist=["make_run"]).make_run("hang")))
        await asyncio.sleep(0.3)
        os.killpg(pid, signal.SIGKILL)
        with pytest.raises(ExecutorDied) as died:
            await job
        assert died.value.signal == signal.SIGKILL
        assert died.value.wire_error()["code"] == "TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE"
        assert (pid, None, signal.SIGKILL) in h.exits
        # the pool forks a replacement and keeps working
        c = await h.execute("pid", None)
        assert c["ok"] and orjson.loads(c["output"]) != pid


async def test_os_exit_is_reported(project: Path) -> None:
    async with Harness(project) as h:
        with pytest.raises(ExecutorDied) as died:
            await h.execute("exit3", None)
        assert died.value.code == 3 and died.value.signal is None


async def test_no_orphans_after_close(project: Path) -> None:
    async with Harness(project, size=3) as h:
        assert h.pool
        for _ in range(3):
            await h.idle()
        while len(h.pool.idle()) < 3:
            await asyncio.sleep(0.01)
        pids = [*h.pool.executors, h.pool.zygote.pid]
    await asyncio.sleep(0.1)
    for pid in pids:
        assert pid is not None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_discovery_error_from_zygote(tmp_path: Path) -> None:
    root = write_project(tmp_path / "bad", {"trigger/boom.py": "\n1 / 0\n"})
    with pytest.raises(DiscoveryFailed) as err:
        async with Harness(root):
            pass
    assert "trigger/boom.py:2" in str(err.value) and "ZeroDivisionError" in str(err.value)
