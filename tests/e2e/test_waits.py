"""Waits, tokens, trigger-and-wait and checkpoints with real worker processes (issue 5)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ApiServer
from tests.e2e.conftest import (
    WorkerProcess,
    make_project,
    start_worker,
    trigger,
    wait_final,
    wait_for,
)

TASKS = """
import asyncio, json, os
from pathlib import Path
from worker import task, queue, wait, step, tasks

solo = queue("solo", concurrency_limit=1)


def note(payload, line):
    with open(payload["log"], "a") as f:
        f.write(json.dumps(line) + "\\n")


@task(id="token-waiter",
      on_wait=lambda payload, wait: note(payload, {"hook": "on_wait", "type": wait["type"]}),
      on_resume=lambda payload, wait: note(payload, {"hook": "on_resume", "type": wait["type"]}))
async def token_waiter(payload, ctx):
    note(payload, {"start": os.getpid()})
    charged = await step("charge", lambda: note(payload, {"charged": True}) or 42)
    token = await wait.create_token(timeout="1h", tags=[payload["tag"]])
    note(payload, {"token": token.id})
    result = await wait.for_token(token)
    return {"data": result.unwrap(), "charged": charged, "pid": os.getpid()}


@task(id="napper")
async def napper(payload, ctx):
    note(payload, {"start": os.getpid()})
    await wait.for_(seconds=0.2)            # in process
    await wait.for_(seconds=6)              # durable: checkpoints at once
    return "rested"


@task(id="parent", queue=solo)
async def parent(payload, ctx):
    one = await tasks.trigger_and_wait("child", {"n": 1})
    many = await child.batch_trigger_and_wait([{"n": 2}, {"n": 3}, {"n": -1}])
    return {"one": one.unwrap(), "many": [r.output if r.ok else "failed" for r in many.runs]}


@task(id="child", queue=solo, retry={"max_attempts": 1})
async def child(payload, ctx):
    if payload["n"] < 0:
        raise ValueError("negative")
    return payload["n"] * 10


@task(id="fickle")
async def fickle(payload, ctx):
    flag = Path(payload["flag"])
    name = "b" if flag.exists() else "a"
    flag.write_text("seen")
    await step(name, lambda: 1)
    token = await wait.create_token()
    await wait.for_token(token)


@task(id="greedy")
async def greedy(payload, ctx):
    a = await wait.create_token()
    b = await wait.create_token()
    await asyncio.gather(wait.for_token(a), wait.for_token(b))


@task(id="many-waiter")
async def many_waiter(payload, ctx):
    token = await wait.create_token(tags=[payload["tag"]])
    return (await wait.for_token(token)).output
"""


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _complete_tokens(client, tag: str) -> int:
    done = 0
    while True:
        page = client.get(
            "/api/v1/waitpoints/tokens",
            params={"filter[tags]": tag, "filter[status]": "WAITING", "page[size]": "100"},
        ).json()
        if not page["data"]:
            return done
        for token in page["data"]:
            client.post(f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": "ok"})
            done += 1


def test_token_wait_in_place(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    workers.append(start_worker(project))
    client = project.client()
    log = tmp_path / "log.jsonl"
    run_id = trigger(client, "token-waiter", {"log": str(log), "tag": "inplace"})
    wait_for(lambda: any("token" in line for line in _lines(log)), what="the token")
    token = next(line["token"] for line in _lines(log) if "token" in line)
    client.post(f"/api/v1/waitpoints/tokens/{token}/complete", json={"data": {"yes": 1}})
    run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED", run
    assert run["output"]["data"] == {"yes": 1} and run["output"]["charged"] == 42
    lines = _lines(log)
    assert sum("start" in line for line in lines) == 1  # resumed in place: no replay
    assert [line.get("hook") for line in lines if "hook" in line] == ["on_wait", "on_resume"]


def test_checkpoint_survives_a_worker_kill_and_replays_elsewhere(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    first = start_worker(project, name="first", TRIGGER_CHECKPOINT_AFTER="0.5")
    workers.append(first)
    client = project.client()
    log = tmp_path / "log.jsonl"
    run_id = trigger(client, "token-waiter", {"log": str(log), "tag": "ckpt"})
    wait_for(
        lambda: client.get(f"/api/v3/runs/{run_id}").json()["status"] == "WAITING",
        what="the checkpoint",
    )
    first.signal_all(signal.SIGKILL)  # nothing of the run lives in that worker any more
    second = start_worker(project, name="second", TRIGGER_CHECKPOINT_AFTER="0.5")
    workers.append(second)
    token = next(line["token"] for line in _lines(log) if "token" in line)
    client.post(f"/api/v1/waitpoints/tokens/{token}/complete", json={"data": "approved"})
    run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED", run
    assert run["output"]["data"] == "approved"
    lines = _lines(log)
    assert sum("start" in line for line in lines) == 2  # replayed from the start ...
    assert sum("charged" in line for line in lines) == 1  # ... but the step ran once
    assert len({line["token"] for line in lines if "token" in line}) == 1  # same token
    assert run["attemptCount"] == 1


def test_duration_wait_checkpoints_and_resumes(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    worker = start_worker(project, concurrency=1)
    workers.append(worker)
    client = project.client()
    run_id = trigger(client, "napper", {"log": str(tmp_path / "nap.jsonl")})
    wait_for(
        lambda: client.get(f"/api/v3/runs/{run_id}").json()["status"] == "WAITING",
        what="the checkpoint",
    )
    run = wait_final(client, run_id, timeout=30)
    assert run["status"] == "COMPLETED" and run["output"] == "rested"


def test_trigger_and_wait_in_a_one_slot_queue_does_not_deadlock(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    workers.append(start_worker(project, concurrency=2, TRIGGER_CHECKPOINT_AFTER="0.5"))
    client = project.client()
    run = wait_final(client, trigger(client, "parent", {}), timeout=60)
    assert run["status"] == "COMPLETED", run
    assert run["output"] == {"one": 10, "many": [20, 30, "failed"]}


def test_nondeterminism_and_concurrent_waits_fail_clearly(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    workers.append(start_worker(project, TRIGGER_CHECKPOINT_AFTER="0"))
    client = project.client()
    fickle = trigger(client, "fickle", {"flag": str(tmp_path / "flag")})
    wait_for(
        lambda: client.get(f"/api/v3/runs/{fickle}").json()["status"] == "WAITING",
        what="the checkpoint",
    )
    assert _complete_tokens(client, "") == 1  # all waiting tokens of this project
    run = wait_final(client, fickle)
    assert run["status"] == "FAILED" and run["attemptCount"] == 1
    assert "NON_DETERMINISTIC" in run["error"]["message"]
    assert "step(a)" in run["error"]["message"] and "step(b)" in run["error"]["message"]

    greedy = wait_final(client, trigger(client, "greedy", {}))
    assert greedy["status"] == "FAILED"
    assert "TASK_DID_CONCURRENT_WAIT" in greedy["error"]["message"]


@pytest.mark.timeout(400)
def test_a_thousand_waiting_runs_hold_no_executor(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    worker = start_worker(project, concurrency=8, TRIGGER_CHECKPOINT_AFTER="0")
    workers.append(worker)
    client = project.client()
    count = int(os.environ.get("TEST_WAITING_RUNS", "1000"))
    reply = client.post(
        "/api/v1/tasks/many-waiter/batch",
        json={"items": [{"payload": {"tag": "thousand"}} for _ in range(count)]},
    ).json()
    ids = [r["id"] for r in reply["runs"]]

    def waiting() -> int:
        with psycopg.connect(api_server.database_url) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM runs WHERE batch_id = %s AND status = 'WAITING_TO_RESUME'",
                (reply["id"],),
            ).fetchone()  # type: ignore[misc]
        return int(n)

    wait_for(lambda: waiting() == count, timeout=300, what="all runs to checkpoint")
    assert len(worker.executors()) == 8  # the pool did not grow: waiting runs hold nothing
    assert _complete_tokens(client, "thousand") == count
    deadline = time.monotonic() + 300
    for run_id in ids:
        run = wait_final(client, run_id, timeout=max(1, deadline - time.monotonic()))
        assert run["status"] == "COMPLETED" and run["output"] == "ok"
