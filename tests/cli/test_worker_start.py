"""`trigger worker` starts its zygote before its own imports and adopts it at boot
(worker/runtime/early_zygote.py): real API, real `python -m worker worker` processes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

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
import os

from worker import task


@task(id="early-hello")
async def hello(payload):
    return {"n": payload["n"], "pid": os.getpid()}
"""


def _zygotes_of(project_dir: Path) -> list[psutil.Process]:
    """The project's zygotes: started ones name the module; the command's early zygote is
    a fork of it (its command line) named trigger-zygote."""
    found = []
    for proc in psutil.process_iter(["cmdline", "name", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["status"] == psutil.STATUS_ZOMBIE or str(project_dir) not in cmdline:
            continue
        if "worker.runtime.zygote" in cmdline or proc.info["name"] == "trigger-zygote":
            found.append(proc)
    return found


def _span_count(client: httpx.Client, run_id: str, at_least: int, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while True:
        count = int(client.get(f"/api/v1/runs/{run_id}/trace").json()["trace"]["spanCount"])
        if count >= at_least or time.monotonic() > deadline:
            return count
        time.sleep(0.1)


def test_a_run_queued_before_the_worker_starts_runs_on_the_zygote_it_started_first(
    tmp_path: Path, api_server: ApiServer, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    first = start_worker(project)  # registers the task: a trigger needs it
    first.stop()
    with project.client() as client:
        run_id = trigger(client, "early-hello", {"n": 7})
        worker = start_worker(project, wait_ready=False)
        workers.append(worker)
        run = wait_final(client, run_id)
        assert run["status"] == "COMPLETED", run
        assert run["output"]["n"] == 7
        # the attempt span came from the executor (spans built in the zygote, sent by it)
        assert _span_count(client, run_id, 2) >= 2
    zygotes = psutil.Process(worker.process.pid).children()
    assert len(zygotes) == 1, [z.cmdline() for z in zygotes]
    # the one the command forked first thing (named, with the command's own command line),
    # not a second one started with the zygote module's
    assert zygotes[0].name() == "trigger-zygote"
    assert "worker.runtime.zygote" not in " ".join(zygotes[0].cmdline())
    executor_pids = {p.pid for p in zygotes[0].children()}
    assert run["output"]["pid"] in executor_pids


def _run_cli(project_dir: Path, env: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if k not in ("TRIGGER_SECRET_KEY", "TRIGGER_WORKER_TOKEN")}
    return subprocess.run(
        [sys.executable, "-m", "worker", "worker", "--project-dir", str(project_dir)],
        env={**base, "PYTHONPATH": str(ROOT), **env}, capture_output=True, text=True,
        timeout=60, cwd=project_dir)


def test_a_worker_that_cannot_start_leaves_no_zygote_behind(
    tmp_path: Path, api_server: ApiServer
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    # no key: the command ends at once, while the zygote it started is still importing
    done = _run_cli(project.dir, {"TRIGGER_API_URL": api_server.url})
    assert done.returncode == 1 and "TRIGGER_WORKER_TOKEN is not set" in done.stderr
    assert "Traceback" not in done.stderr
    wait_for(lambda: not _zygotes_of(project.dir), 10, "the early zygote to go")


def test_a_project_that_fails_to_import_is_reported_by_the_early_zygote(
    tmp_path: Path, api_server: ApiServer
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": "import nowhere_to_be_found\n"})
    done = _run_cli(project.dir, {"TRIGGER_API_URL": api_server.url,
                                  "TRIGGER_SECRET_KEY": project.key})
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()
    assert any("the project cannot be loaded" in line and "tasks.py" in line for line in last)
    assert "nowhere_to_be_found" in done.stderr
    wait_for(lambda: not _zygotes_of(project.dir), 10, "the zygote to go")
