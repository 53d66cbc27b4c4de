"""The zygote `trigger worker` forks first thing (worker/runtime/early_zygote.py) is set up as a
fresh ``python -P -m worker.runtime.zygote`` would be, and its first executor (forked before
the end of the warm-up) runs as the others do: real API, real `python -m worker worker`."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, ApiServer
from tests.e2e.conftest import (
    WorkerProcess,
    make_project,
    start_worker,
    trigger,
    wait_final,
    wait_for,
)

TASKS = """
import gc
import os
import sys

from worker import task


@task(id="inside")
async def inside(payload):
    return {
        "pid": os.getpid(),
        "cwd": os.getcwd(),
        "path": sys.path,
        "pythonpath": os.environ.get("PYTHONPATH", ""),
        "gc_enabled": gc.isenabled(),
        "frozen": gc.get_freeze_count(),
        "group": os.getpgid(0) == os.getpid(),
        "pydantic": sorted(m for m in sys.modules if m.split(".")[0] == "pydantic"),
    }
"""


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """The workers a test starts, stopped afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def test_a_run_queued_before_the_worker_starts_runs_in_a_fork_set_up_as_a_fresh_zygote(
    tmp_path: Path, api_server: ApiServer, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path / "project", api_server, {"tasks.py": TASKS})
    start_worker(project).stop()  # registers the task: a trigger needs it
    elsewhere = tmp_path / "elsewhere"  # the command runs from another folder
    elsewhere.mkdir()
    log = (tmp_path / "worker.log").open("ab")
    with project.client() as client:
        run_id = trigger(client, "inside", {})
        # one executor: the one the zygote forks as soon as what an attempt needs is imported
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", "worker", "--project-dir", str(project.dir),
             "--concurrency", "1"],
            env={**os.environ, "TRIGGER_API_URL": api_server.url,
                 "TRIGGER_SECRET_KEY": project.key, "PYTHONPATH": str(ROOT)},
            stdout=log, stderr=subprocess.STDOUT, cwd=elsewhere)
        workers.append(WorkerProcess(process, tmp_path / "worker.log"))
        run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED", run
    out = run["output"]

    [zygote] = psutil.Process(process.pid).children()
    assert zygote.name() == "trigger-zygote"
    assert zygote.cwd() == str(project.dir)
    [executor] = zygote.children()
    assert executor.pid == out["pid"] and executor.name() == "trigger-exec"

    # as `python -P -m worker.runtime.zygote` in the project folder: the command's own folder
    # is not on sys.path, the package root is on PYTHONPATH, the project root is put first
    assert out["cwd"] == str(project.dir)
    assert str(elsewhere) not in out["path"] and "" not in out["path"]
    assert out["path"][0] == str(project.dir)
    assert str(ROOT) in out["pythonpath"].split(os.pathsep)
    # forked before the zygote froze its heap: it froze what it inherited itself, collector on
    assert out["gc_enabled"] is True and out["frozen"] > 10_000
    assert out["group"] is True
    # a config of plain values never loads pydantic (worker/sdk/config.py)
    assert out["pydantic"] == []


def test_the_forked_zygote_holds_nothing_of_the_command_but_its_pipes(
    tmp_path: Path, api_server: ApiServer, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    worker = start_worker(project, concurrency=2)
    workers.append(worker)
    # warmed up (what it imports then may open a pipe for a moment): the second executor is
    # forked after the warm-up, the first one before its end
    wait_for(lambda: "2 warm executor" in worker.log(), 30, "the pool to be warm")
    [zygote] = psutil.Process(worker.process.pid).children()
    # its protocol pipes (moved off fds 0/1), the wake-up pipe of its SIGCHLD handler, and
    # fds 0-2 (/dev/null, stderr twice): no socket, no file of the command
    fds = {fd: os.readlink(f"/proc/{zygote.pid}/fd/{fd}")
           for fd in os.listdir(f"/proc/{zygote.pid}/fd")}
    assert len(fds) <= 7, fds
    assert not zygote.net_connections(kind="all")
    assert os.readlink(f"/proc/{zygote.pid}/fd/0") == os.devnull
