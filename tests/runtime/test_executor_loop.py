"""The executor's frame loop: one event-loop run for the process's life, an attempt per task.

Driven through a real zygote and real executors (tests/runtime/harness.py), without the API.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from tests.runtime.harness import Harness
from tests.runtime.projects import write_project

TASKS = """
import asyncio
import contextvars
import os

from worker.sdk import attempt_hooks
from worker.sdk.logger import logger
from worker.sdk.task import task

SEEN = contextvars.ContextVar("seen", default="unset")
SLOW = {"on": False}


async def ending(ctx):
    # no busy() predicate: the executor bounds it with its timer, and it may wait
    if SLOW["on"]:
        await asyncio.sleep(0.05)
    return None


attempt_hooks.on_attempt_end(ending)


@task(id="sets-a-variable")
async def sets_a_variable(payload):
    before = SEEN.get()
    SEEN.set(payload["value"])
    SLOW["on"] = bool(payload.get("slow"))
    return {"before": before, "pid": os.getpid()}


@task(id="fails")
async def fails(payload):
    logger.info("failing now")
    raise ValueError("no")
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})


async def test_context_variables_end_with_their_attempt(project: Path) -> None:
    async with Harness(project) as h:
        pids = set()
        for i in range(3):
            c = await h.execute("sets-a-variable", {"value": f"v{i}", "slow": i == 1},
                                run_id=f"run_{i}")
            out = orjson.loads(c["output"])
            # the same warm executor, and what attempt i set is gone for attempt i + 1
            assert out["before"] == "unset", (i, out)
            pids.add(out["pid"])
            assert c["ok"] is True and c["duration_ms"] >= 0
        assert len(pids) == 1


async def test_a_failed_attempt_then_the_next_one_in_the_same_executor(project: Path) -> None:
    async with Harness(project) as h:
        c = await h.execute("fails", {})
        assert c["ok"] is False and c["error"]["message"] == "no"
        assert "failing now" in h.messages("run_1")
        c = await h.execute("sets-a-variable", {"value": "x"}, run_id="run_2")
        assert c["ok"] is True and orjson.loads(c["output"])["before"] == "unset"


def test_a_read_run_is_the_frozen_object_its_constructor_makes() -> None:
    from worker.common.protocol import DequeuedRun
    from worker.common.run_context import RunContext
    from worker.sdk.config import define_config
    from worker.sdk.task import task
    from worker.testing import _run

    run = _run(task(id="noop", run=lambda payload: payload), {"a": 1},
               define_config(project="proj"), run_id="run_9", attempt=2, max_attempts=3,
               machine="large-1x", max_duration=30, tags=["t"], environment="prod")
    wire = run.to_wire()
    wire.update(traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01", env_vars={"A": "1"},
                journal=[{"seq": 1}])
    run = dataclasses.replace(run, traceparent=wire["traceparent"], env_vars={"A": "1"},
                              journal=[{"seq": 1}])
    read = DequeuedRun.from_wire(orjson.loads(orjson.dumps(wire)))
    assert type(read) is DequeuedRun and type(read.ctx) is RunContext
    assert read == run and read.ctx == run.ctx and read.ctx.run == run.ctx.run
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.ctx.run.id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        read.run_id = "other"  # type: ignore[misc]
    again = dataclasses.replace(read, attempt_number=3)
    assert again.attempt_number == 3 and again.ctx is read.ctx
    # the repeated parts are shared between runs, the others are not
    other = DequeuedRun.from_wire(orjson.loads(orjson.dumps(wire)))
    assert other.ctx.environment is read.ctx.environment and other.ctx.run is not read.ctx.run
