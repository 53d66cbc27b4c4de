"""The supervisor's hot path between runs: a freed executor is handed its next run in the same
callback its completion frame arrives in, and a just-started zygote forks its first executor
before the end of its warm-up (docs/cold-start.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from tests.runtime.harness import Harness, make_run
from tests.runtime.projects import write_project
from worker.runtime.executor_link import Executor, ExecutorServer, kill_group

TASKS = """
from worker.sdk.task import task


@task(id="echo")
def echo(payload):
    return payload
"""


async def test_a_freed_executor_gets_its_next_run_before_the_completion_is_handled(
        tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})
    async with Harness(project, size=1) as h:
        assert h.pool
        ex = await h.idle()
        order: list[str] = []
        later: list[asyncio.Future[dict[str, Any]]] = []
        second = make_run("echo", 2, run_id="run_second")

        def on_free() -> None:  # as the supervisor's dispatch does
            if not later:
                assert ex.run is None and not ex.retiring
                order.append("second sent")
                later.append(h.pool.start(ex, second))

        h.pool.on_free = on_free
        first = h.pool.start(ex, make_run("echo", 1, run_id="run_first"))
        first.add_done_callback(lambda _: order.append("first handled"))
        assert (await first)["completion"]["output"] == "1"
        assert order == ["second sent", "first handled"]
        frame = await asyncio.wait_for(later[0], 10)
        assert frame["completion"]["run_id"] == "run_second"
        assert frame["completion"]["output"] == "2"
        assert ex.runs_done == 2 and ex.run is None


async def test_the_first_fork_asked_for_comes_before_the_end_of_the_warm_up(
        tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})
    tmp = tempfile.mkdtemp(prefix="twd-")  # unix socket paths are short
    server = ExecutorServer(os.path.join(tmp, "s"))
    await server.start()
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    zygote = subprocess.Popen(
        [sys.executable, "-P", "-m", "worker.runtime.zygote", "--project", str(project),
         "--socket", server.path, "--early-fork"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, env=env, cwd=str(project))
    pids: list[int] = []
    try:
        assert zygote.stdin is not None and zygote.stdout is not None
        # asked for before the zygote has even imported the project, as a worker that starts
        # with runs queued does: two forks, the first comes early, the second after the warm-up
        zygote.stdin.write(b'{"cmd":"fork"}\n{"cmd":"fork"}\n')
        zygote.stdin.flush()
        loop = asyncio.get_running_loop()
        lines = [orjson.loads(await loop.run_in_executor(None, zygote.stdout.readline))
                 for _ in range(3)]
        assert lines[0]["type"] == "ready"
        assert [line["type"] for line in lines[1:]] == ["forked", "forked"]
        assert lines[1].get("early") is True and "early" not in lines[2]
        pids = [int(line["pid"]) for line in lines[1:]]
        for i, pid in enumerate(pids):  # both run tasks
            conn = await server.wait_for(pid)
            ex = Executor(pid, conn, lambda frame: None)
            ex.run = make_run("echo", i, run_id=f"run_{i}")
            frame = await asyncio.wait_for(ex.send(ex.run), 10)
            assert frame["completion"]["ok"] and frame["completion"]["output"] == str(i)
            ex.close()
    finally:
        for pid in pids:
            kill_group(pid)
        zygote.kill()
        zygote.wait()
        await server.close()
        shutil.rmtree(tmp, ignore_errors=True)
