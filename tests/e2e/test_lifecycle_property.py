"""A stateful property test of the run lifecycle against the real engine and real workers.

A seeded random sequence of actions (trigger a run of a random durable program, complete
tokens, cancel, replay, SIGKILL an executor) runs against one API process and one worker
process with ``TRIGGER_CHECKPOINT_AFTER=0.3`` (so token and child waits checkpoint). Each
program is a random list of durable operations — steps, token waits, checkpointing duration
waits, a child, a batch of children, a planned failure on attempt 1 — and checks, inside the
task, what it can see. Then the test checks the invariants:

- every run ends (nothing is left waiting once the tokens are completed);
- a run that was not canceled completes (its failures and kills are retried);
- no NON_DETERMINISTIC and no misaligned batch result (the programs are deterministic);
- every step value a run returns is its own final attempt's (issue 19 item 8: a replay after a
  checkpoint never hands one attempt another attempt's outcomes).

Bounded: fixed seeds, a fixed number of actions; about 30-40 s.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import ApiServer
from tests.e2e.conftest import FINAL, WorkerProcess, make_project, start_worker

TASKS = """
import time
from worker import task, wait, step, batch, idempotency_keys

RETRY = {"max_attempts": 8, "min_timeout_ms": 100, "max_timeout_ms": 200, "randomize": False}


@task(id="program", retry=RETRY)
async def program(payload, ctx):
    n = ctx.attempt.number
    steps = []
    for i, op in enumerate(payload["ops"]):
        if op == "step":
            steps.append(await step(f"s{i}", lambda: n))
        elif op == "token":
            token = await wait.create_token(tags=[payload["tag"]])
            assert (await wait.for_token(token)).ok, "token timed out"
        elif op == "nap":
            key = idempotency_keys.create(f"nap{i}", scope="attempt")
            await wait.for_(seconds=1, idempotency_key=key)
        elif op == "child":
            result = await echo.trigger_and_wait({"v": i})
            if not (result.ok and result.output == {"v": i}):
                raise AssertionError(f"MISALIGNED child {i}: {result}")
        elif op == "batch":
            items = [{"id": "echo" if j % 2 else "flaky", "payload": {"v": j}} for j in range(3)]
            result = await batch.trigger_and_wait(items)
            seen = [(r.task_identifier, r.ok, r.output) for r in result.runs]
            want = [(it["id"], True, it["payload"]) for it in items]
            if seen != want:
                raise AssertionError(f"MISALIGNED batch: {seen} != {want}")
        elif op == "fail" and n == 1:
            raise RuntimeError("planned failure on attempt 1")
    return {"attempt": n, "steps": steps}


@task(id="echo", retry=RETRY)
async def echo(payload, ctx):
    time.sleep(0.4)  # long enough for a parent to checkpoint
    return payload


@task(id="flaky", retry=RETRY)
async def flaky(payload, ctx):
    if ctx.attempt.number == 1:
        raise RuntimeError("flaky child fails on attempt 1")
    return payload
"""

OPS = ["step", "token", "nap", "child", "batch", "fail"]


def _program(rng: random.Random) -> list[str]:
    ops = rng.choices(OPS, weights=[3, 2, 2, 2, 1, 1], k=rng.randint(2, 4))
    if "fail" in ops and ops[-1] == "fail" and rng.random() < 0.5:
        ops.append("step")  # a step after the failure point too
    return ops


def _complete_tokens(client: httpx.Client, tag: str) -> None:
    page = client.get(
        "/api/v1/waitpoints/tokens",
        params={"filter[tags]": tag, "filter[status]": "WAITING", "page[size]": "100"},
    ).json()
    for token in page["data"]:
        client.post(f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": 1})


def _all_runs(client: httpx.Client) -> list[dict[str, Any]]:
    runs: list[dict[str, Any]] = []
    params = {"page[size]": "100"}
    while True:
        page = client.get("/api/v1/runs", params=params).json()
        runs += page["data"]
        after = (page.get("pagination") or {}).get("next")
        if not after or not page["data"]:
            return runs
        params = {"page[size]": "100", "page[after]": after}


def _kill_an_executor(rng: random.Random, worker: WorkerProcess) -> bool:
    executors = worker.executors()
    if not executors:
        return False
    with contextlib.suppress(psutil.NoSuchProcess):
        rng.choice(executors).kill()
        return True
    return False


@pytest.mark.parametrize("seed", [161, 85])
def test_random_lifecycles_keep_the_invariants(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess], seed: int
) -> None:
    rng = random.Random(seed)  # the sequence of actions: the same whatever their effects
    pick = random.Random(seed + 1)  # which executor to kill (how many there are varies)
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    worker = start_worker(project, concurrency=4, TRIGGER_CHECKPOINT_AFTER="0.3")
    workers.append(worker)
    client = project.client()
    tag = f"prop-{seed}-{project.ref}"
    programs: dict[str, list[str]] = {}
    canceled: set[str] = set()
    kills = 0
    done: dict[str, int] = {}
    for _ in range(30):
        action = rng.choices(
            ["trigger", "tokens", "cancel", "replay", "kill"], weights=[4, 3, 1, 1, 1]
        )[0]
        top = list(programs)
        if action == "trigger" and len(programs) < 10:
            ops = _program(rng)
            reply = client.post(
                "/api/v1/tasks/program/trigger", json={"payload": {"ops": ops, "tag": tag}}
            )
            assert reply.status_code == 200, reply.text
            programs[reply.json()["id"]] = ops
        elif action == "tokens":
            _complete_tokens(client, tag)
        elif action == "cancel" and top:
            victim = rng.choice(top)
            if client.post(f"/api/v2/runs/{victim}/cancel").json().get("canceled"):
                canceled.add(victim)
        elif action == "replay" and top:
            original = rng.choice(top)
            reply = client.post(f"/api/v1/runs/{original}/replay")
            assert reply.status_code == 200, reply.text
            programs[reply.json()["id"]] = programs[original]
        elif action == "kill" and kills < 3:
            kills += _kill_an_executor(pick, worker)
        else:
            action = "nothing"
        done[action] = done.get(action, 0) + 1
        time.sleep(0.2)
    # the sequence exercised the lifecycle (a vacuous sequence would prove nothing)
    assert all(done.get(a) for a in ("trigger", "cancel", "replay", "kill")), done

    # Drain: complete whatever tokens appear until every run (children too) has ended.
    deadline = time.monotonic() + 90
    while True:
        _complete_tokens(client, tag)
        runs = _all_runs(client)
        waiting = [r for r in runs if r["status"] not in FINAL]
        if not waiting:
            break
        assert time.monotonic() < deadline, f"runs never ended: {waiting}"
        time.sleep(0.3)

    details = {r: client.get(f"/api/v3/runs/{r}").json() for r in programs}
    for run_id, run in details.items():
        text = json.dumps(run)
        assert "NON_DETERMINISTIC" not in text, run
        assert "MISALIGNED" not in text, run
        if run_id in canceled or run["status"] == "CANCELED":
            continue
        assert run["status"] == "COMPLETED", (programs[run_id], run)
        output = run["output"]
        assert output["attempt"] == run["attemptCount"], run
        # every step value is the final attempt's own, before and after its checkpoints
        assert output["steps"] == [output["attempt"]] * programs[run_id].count("step"), run
