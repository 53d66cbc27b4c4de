"""Runs executed end to end: API process + `trigger worker` processes + real Postgres."""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime
from pathlib import Path

import psycopg

from tests.conftest import ApiServer
from tests.e2e.conftest import (
    WorkerProcess,
    make_project,
    start_worker,
    trigger,
    wait_final,
    wait_for,
)

PID_TASKS = """
import asyncio, os, time
from pathlib import Path
from worker import task, AbortTaskRunError


@task(id="pid-then-sleep", retry={"max_attempts": 3, "min_timeout_ms": 100, "randomize": False})
async def pid_then_sleep(payload, ctx):
    Path(payload["dir"], f"{ctx.attempt.number}.pid").write_text(str(os.getpid()))
    if ctx.attempt.number == 1:
        await asyncio.sleep(payload.get("sleep", 30))
    return {"attempt": ctx.attempt.number, "worker": os.environ.get("WORKER_NAME")}


@task(id="abort", retry={"max_attempts": 5, "min_timeout_ms": 10})
def abort(payload, ctx):
    raise AbortTaskRunError("this input can never work")


@task(id="sleepy", max_duration=1, retry={"max_attempts": 3, "min_timeout_ms": 10})
async def sleepy(payload, ctx):
    await asyncio.sleep(30)


@task(id="spin", max_duration=1, retry={"max_attempts": 3, "min_timeout_ms": 10})
def spin(payload, ctx):
    end = time.time() + 30
    while time.time() < end:  # never yields: only a signal can stop it
        pass
"""


def _attempts(api: ApiServer, run_id: str) -> list[tuple[str, dict | None, datetime, datetime]]:
    with psycopg.connect(api.database_url) as conn:
        return conn.execute(  # type: ignore[return-value]
            "SELECT status, error, started_at, completed_at FROM run_attempts "
            "WHERE run_id = %s ORDER BY number",
            (run_id,),
        ).fetchall()


def test_example_project_runs_end_to_end(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    import shutil

    from tests.conftest import ROOT

    shutil.copytree(
        ROOT / "trigger", tmp_path / "trigger", ignore=shutil.ignore_patterns("__pycache__")
    )
    project = make_project(tmp_path, api_server, {})
    workers.append(start_worker(project, TASKS_DATABASE_URL=api_server.database_url))
    client = project.client()

    hello = wait_final(client, trigger(client, "hello-world", {"name": "Ada"}))
    assert hello["status"] == "COMPLETED", hello
    assert "Ada" in str(hello["output"])

    flaky_id = trigger(client, "flaky", {})
    flaky = wait_final(client, flaky_id)
    assert flaky["status"] == "COMPLETED" and flaky["output"] == {"succeeded_on_attempt": 2}
    first, second = _attempts(api_server, flaky_id)
    assert first[0] == "FAILED" and second[0] == "COMPLETED"
    # backoff of the task's retry options: at least min_timeout_ms (500) * factor**0
    assert (second[2] - first[3]).total_seconds() >= 0.5

    greeted = wait_final(client, trigger(client, "greet-user", {"name": "Bo", "age": 30}))
    assert greeted["output"] == {"greeting": "Hi Bo", "adult": True}
    refused = client.post("/api/v1/tasks/greet-user/trigger", json={"payload": {"name": "Bo"}})
    assert refused.status_code == 422
    assert "'age' is a required property" in refused.json()["error"]

    visit = wait_final(client, trigger(client, "record-visit", {"visitor": "e2e"}))
    assert visit["status"] == "COMPLETED", visit


def test_abort_stops_retries(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": PID_TASKS})
    workers.append(start_worker(project))
    client = project.client()
    run = wait_final(client, trigger(client, "abort", {}))
    assert run["status"] == "FAILED"
    assert run["attemptCount"] == 1
    assert "can never work" in run["error"]["message"]


def test_max_duration_times_out_async_and_cpu_bound_tasks(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": PID_TASKS})
    workers.append(start_worker(project))
    client = project.client()
    ids = [trigger(client, "sleepy", {}), trigger(client, "spin", {})]
    for run_id in ids:
        run = wait_final(client, run_id, timeout=40)
        assert run["status"] == "TIMED_OUT", run
        assert run["attemptCount"] == 1  # never retried
        assert run["error"]["code"] == "MAX_DURATION_EXCEEDED"


def test_sigkill_of_an_executor_fails_only_its_attempt(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": PID_TASKS})
    worker = start_worker(project, concurrency=2)
    workers.append(worker)
    wait_for(lambda: len(worker.executors()) == 2, what="2 warm executors")
    client = project.client()
    run_id = trigger(client, "pid-then-sleep", {"dir": str(tmp_path)})
    pid_file = tmp_path / "1.pid"
    # write_text creates the file before it writes: wait for the pid itself
    wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(),
             what="the task to start")
    victim = int(pid_file.read_text())
    os.kill(victim, signal.SIGKILL)
    run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED" and run["output"]["attempt"] == 2
    assert run["attempts"][0]["status"] == "FAILED"
    assert run["attempts"][0]["error"]["type"] == "INTERNAL_ERROR"
    # the pool is back to its size, without the dead executor
    wait_for(lambda: len(worker.executors()) == 2, what="the pool to refill")
    assert victim not in {p.pid for p in worker.executors()}
    assert worker.alive()


def test_sigkill_of_a_whole_worker_rescues_its_run(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": PID_TASKS})
    first = start_worker(project, name="first")
    workers.append(first)
    client = project.client()
    run_id = trigger(client, "pid-then-sleep", {"dir": str(tmp_path)})
    wait_for((tmp_path / "1.pid").exists, what="the task to start")
    first.signal_all(signal.SIGKILL)
    second = start_worker(project, name="second")
    workers.append(second)
    run = wait_final(client, run_id, timeout=30)
    assert run["status"] == "COMPLETED"
    assert run["output"] == {"attempt": 2, "worker": "second"}, run["attempts"]
    assert run["attempts"][0]["error"]["code"] == "TASK_RUN_STALLED_EXECUTING"


def test_a_frozen_worker_cannot_complete_after_losing_its_lease(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": PID_TASKS})
    first = start_worker(project, name="first")
    workers.append(first)
    client = project.client()
    run_id = trigger(client, "pid-then-sleep", {"dir": str(tmp_path), "sleep": 4})
    wait_for((tmp_path / "1.pid").exists, what="the task to start")
    first.signal_all(signal.SIGSTOP)  # frozen: no heartbeats, the lease (3 s) expires
    second = start_worker(project, name="second")
    workers.append(second)
    run = wait_final(client, run_id, timeout=30)
    assert run["output"] == {"attempt": 2, "worker": "second"}
    first.signal_all(signal.SIGCONT)  # wakes up and finishes attempt 1: must be refused
    time.sleep(6)
    after = client.get(f"/api/v3/runs/{run_id}").json()
    assert after["status"] == "COMPLETED"
    assert after["output"] == {"attempt": 2, "worker": "second"}
    assert [a["status"] for a in after["attempts"]] == ["FAILED", "COMPLETED"]
    assert first.alive()
