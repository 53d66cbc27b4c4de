"""``worker.testing``: users run their tasks in their own tests, with ctx, hooks and logger."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.projects import write_project
from worker.testing import run_task, run_task_sync

TASKS = """
import time

from worker.sdk.context import current_context, locals
from worker.sdk.errors import AbortTaskRunError
from worker.sdk.logger import logger
from worker.sdk.task import task

USER = locals.create("user")


async def with_user(payload, next):
    locals.set(USER, payload.get("user", "anon"))
    await next()


@task(id="greet", middleware=with_user,
      on_start=lambda ctx: logger.info(f"on_start attempt {ctx.attempt.number}"),
      on_success=lambda output: logger.info("on_success", output=output),
      on_failure=lambda error: logger.error("on_failure", error=str(error)))
async def greet(payload, ctx):
    logger.info("greeting", token="secret-value", user=locals.get(USER))
    print("hello from print")
    if payload.get("fail_until", 0) > ctx.attempt.number:
        raise RuntimeError(f"attempt {ctx.attempt.number} fails")
    return {"hi": locals.get(USER), "run": current_context().run.id == ctx.run.id,
            "tags": list(ctx.run.tags), "env": ctx.environment.slug}


@task(id="abort")
def abort(payload):
    raise AbortTaskRunError("no")


@task(id="slow", max_duration=60)
def slow(payload):
    time.sleep(5)
"""

CONFIG = """
from worker.sdk.config import define_config
from worker.sdk.logger import logger

config = define_config(project="proj", dirs=["trigger"],
                       retries={"default": {"max_attempts": 3, "min_timeout_ms": 10,
                                            "factor": 1, "randomize": False}},
                       on_success=lambda: logger.info("global on_success"))
"""


@pytest.fixture
def tasks(tmp_path: Path) -> Iterator[Any]:
    """The user's task module, imported the way their own tests would import it."""
    root = write_project(tmp_path / "proj", {"trigger/mytasks.py": TASKS}, config=CONFIG)
    spec = importlib.util.spec_from_file_location("user_mytasks", root / "trigger/mytasks.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.ROOT = root
    yield module


async def test_success_with_ctx_hooks_locals_and_logs(tasks: Any) -> None:
    result = await run_task(tasks.greet, {"user": "ada"}, tags=["vip"],
                            config=tasks.ROOT)
    assert result.ok, result.error
    assert result.output == {"hi": "ada", "run": True, "tags": ["vip"], "env": "dev"}
    assert result.messages[:2] == ["on_start attempt 1", "greeting"]
    assert "hello from print" in result.messages
    assert "global on_success" in result.messages and "on_success" in result.messages
    greeting = next(r for r in result.logs if r.message == "greeting")
    assert greeting.attributes == {"token": "[REDACTED]", "user": "ada"}


async def test_failures_retries_and_abort(tasks: Any) -> None:
    greet = tasks.greet
    root = tasks.ROOT
    one = await run_task(greet, {"fail_until": 5}, config=root)
    assert not one.ok and one.error and one.error["message"] == "attempt 1 fails"
    assert one.will_retry() and one.retry_delay_ms == 10 and "on_failure" not in one.messages

    every = await run_task(greet, {"fail_until": 2}, config=root, retries=True)
    assert every.ok and every.attempts == 2

    final = await run_task(greet, {"fail_until": 9}, config=root, retries=True)
    assert not final.ok and final.attempts == 3 and final.skipped_retrying
    assert "on_failure" in final.messages

    aborted = await run_task(tasks.abort, None)
    assert aborted.error and aborted.error["name"] == "AbortTaskRunError"
    assert not aborted.will_retry()


async def test_max_duration(tasks: Any) -> None:
    result = await run_task(tasks.slow, None, max_duration=0.3)
    assert result.error_code == "MAX_DURATION_EXCEEDED"


def test_sync_entry_point(tasks: Any) -> None:
    result = run_task_sync(tasks.greet, {}, environment="prod")
    assert result.ok and result.output["env"] == "prod" and result.output["hi"] == "anon"
