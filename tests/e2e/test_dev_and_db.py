"""`trigger dev` (hot reload, Ctrl-C), discovery errors at the CLI, the `worker.db` pool."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from tests.conftest import ROOT, ApiServer, free_port
from tests.e2e.conftest import (
    WorkerProcess,
    make_project,
    start_worker,
    trigger,
    wait_final,
    wait_for,
)

VERSIONED = """
from worker import task


@task(id="which-version")
async def which_version(payload, ctx):
    return dict(version=VERSION)


VERSION = {version}
"""


def test_trigger_dev_hot_reloads_and_ctrl_c_stops_everything(
    api_server: ApiServer, tmp_path: Path
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": VERSIONED.format(version=1)})
    port = free_port()
    log_path = tmp_path / "dev.log"
    dev = subprocess.Popen(
        [sys.executable, "-m", "worker", "dev", "--port", str(port), "--concurrency", "2"],
        cwd=tmp_path,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "DATABASE_URL": api_server.database_url, "PYTHONPATH": str(ROOT)},
    )
    try:
        wait_for(lambda: "worker ready" in log_path.read_text(), timeout=60, what="dev ready")
        text = log_path.read_text()
        assert f"http://127.0.0.1:{port}" in text
        key_line = next(line for line in text.splitlines() if "secret key" in line)
        key = key_line.split("secret key")[1].split()[0]
        assert key.startswith("tr_dev_")
        project.api = ApiServer(f"http://127.0.0.1:{port}", api_server.database_url, dev)
        project.key = key
        client = project.client()
        first = wait_final(client, trigger(client, "which-version"))
        assert first["output"] == {"version": 1}
        assert first["id"] in log_path.read_text()  # one line per run in the console

        project.write("tasks.py", VERSIONED.format(version=2))
        wait_for(
            lambda: log_path.read_text().count("worker ready") >= 2,
            timeout=30,
            what="the reloaded version",
        )
        second = wait_final(client, trigger(client, "which-version"))
        assert second["output"] == {"version": 2}

        project.write("tasks.py", "this is not python(")
        wait_for(
            lambda: "reload failed" in log_path.read_text(), timeout=30, what="the reload error"
        )
        assert "tasks.py" in log_path.read_text()
        third = wait_final(client, trigger(client, "which-version"))
        assert third["output"] == {"version": 2}  # the old version keeps serving

        tree = psutil.Process(dev.pid).children(recursive=True)
        assert len(tree) >= 3  # API, zygote, executors
        dev.send_signal(signal.SIGINT)
        dev.wait(30)
        assert dev.returncode in (0, 130, -2)
        wait_for(
            lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree),
            timeout=15,
            what="every child to exit",
        )
    finally:
        if dev.poll() is None:
            dev.kill()


def test_worker_refuses_a_project_with_discovery_errors(
    api_server: ApiServer, tmp_path: Path
) -> None:
    project = make_project(
        tmp_path,
        api_server,
        {
            "a.py": 'from worker import task\n\n@task(id="same")\ndef a(p, ctx):\n    return 1\n',
            "b.py": 'from worker import task\n\n\n@task(id="same")\ndef b(p, ctx):\n    return 2\n',
        },
    )
    worker = start_worker(project, wait_ready=False)
    try:
        worker.process.wait(30)
        log = worker.log()
        assert worker.process.returncode != 0
        assert "same" in log and "a.py:3" in log and "b.py:4" in log, log
    finally:
        worker.stop()


DB_TASK = """
import os
from worker import task
from worker.db import sql


@task(id="backend")
async def backend(payload, ctx):
    rows = await sql("select pg_backend_pid() as backend, pg_sleep(%s::float8) as _", 1.0)
    return {"pid": os.getpid(), "backend": rows[0]["backend"]}
"""


def test_executors_never_share_a_db_connection(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"db.py": DB_TASK})
    workers.append(start_worker(project, concurrency=2, TASKS_DATABASE_URL=api_server.database_url))
    client = project.client()
    ids = [trigger(client, "backend") for _ in range(4)]
    outputs = [wait_final(client, run_id)["output"] for run_id in ids]
    pids = {o["pid"] for o in outputs}
    assert len(pids) == 2  # both executors ran tasks
    by_pid: dict[int, set[int]] = {}
    for o in outputs:
        by_pid.setdefault(o["pid"], set()).add(o["backend"])
    backends = list(by_pid.values())
    assert not backends[0] & backends[1]  # no connection seen by two processes


def test_sdk_triggers_and_polls(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": VERSIONED.format(version=7)})
    workers.append(start_worker(project))

    async def main() -> tuple[str, object]:
        from worker import configure, runs, tasks

        configure(api_url=project.api.url, secret_key=project.key)
        handle = await tasks.trigger("which-version", {"x": 1})
        run = await runs.poll(handle.id, poll_interval=0.05, timeout=30)
        return run.status, run.output

    status, output = asyncio.run(main())
    assert status == "COMPLETED" and output == {"version": 7}

    from worker import sync

    sync.configure(api_url=project.api.url, secret_key=project.key)
    handle = sync.tasks.trigger("which-version", None)
    started = time.monotonic()
    run = sync.runs.poll(handle.id, poll_interval=0.05, timeout=30)
    assert run.output == {"version": 7} and time.monotonic() - started < 30
