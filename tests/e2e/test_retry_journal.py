"""Retries and the journal (issue 18, issue 19 items 2, 3, 8), with real worker processes.

The rule (docs/run-states.md, "Retries and the journal"): each attempt has its own journal. A
retry runs the task from the top: it waits again, creates tokens and triggers children anew and
runs its steps again; idempotency keys are how an operation happens once across attempts.
Within an attempt, a replay after a checkpoint returns that attempt's own recorded outcomes.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ApiServer
from tests.e2e.conftest import (
    Project,
    WorkerProcess,
    make_project,
    start_worker,
    trigger,
    wait_final,
    wait_for,
)

TASKS = """
import json, os, signal, time
from pydantic import BaseModel
from worker import task, schema_task, wait, step, batch, idempotency_keys, queue

FAST_RETRY = {"max_attempts": 3, "min_timeout_ms": 100, "randomize": False}


def note(payload, line):
    with open(payload["log"], "a") as f:
        f.write(json.dumps({**line, "pid": os.getpid()}) + "\\n")


@task(id="nap-then-raise", retry=FAST_RETRY)
async def nap_then_raise(payload, ctx):
    n = ctx.attempt.number
    await wait.for_(seconds=5.5)  # over 5 s: checkpoints at once
    note(payload, {"attempt": n, "after_wait": True})
    if n == 1:
        raise RuntimeError("attempt 1 fails after its wait")
    return {"attempt": n}


@task(id="token-then-fault", retry=FAST_RETRY)
async def token_then_fault(payload, ctx):
    n = ctx.attempt.number
    value = await step("which-attempt", lambda: n)
    token = await wait.create_token(tags=[payload["tag"]])
    note(payload, {"attempt": n, "token": token.id})
    await wait.for_token(token)  # held 0.3 s in place, then checkpoints
    note(payload, {"attempt": n, "after_wait": True, "step": value})
    if n == 1:
        if payload["fault"] == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if payload["fault"] == "freeze":
            time.sleep(60)  # the test freezes the whole worker meanwhile
    return {"attempt": n, "step": value}


@task(id="parent", retry=FAST_RETRY)
async def parent(payload, ctx):
    n = ctx.attempt.number
    value = await step("which-attempt", lambda: n)
    options = {"idempotency_key": payload["key"]} if payload.get("key") else {}
    fail = n == 1 and payload["child_fails"]
    result = await child.trigger_and_wait({"fail": fail}, **options)  # checkpoints
    note(payload, {"attempt": n, "step": value, "child": result.id, "ok": result.ok})
    if n == 1:
        result.unwrap()  # the child failed: so does this attempt
        raise RuntimeError("attempt 1 of the parent fails after its child")
    # one more checkpoint, past the positions attempt 1 used: the replay must still hand this
    # attempt its own step value and child result (issue 19 item 8)
    await wait.for_(seconds=1, idempotency_key=idempotency_keys.create("nap", scope="attempt"))
    return {"attempt": n, "step": value, "child": result.id, "ok": result.ok,
            "output": result.output}


@task(id="child", retry={"max_attempts": 1})
async def child(payload, ctx):
    time.sleep(0.8)  # long enough for the parent to checkpoint
    if payload["fail"]:
        raise ValueError("child told to fail")
    return "child ok"


@task(id="keyed-token")
async def keyed_token(payload, ctx):
    token = await wait.create_token(idempotency_key="shared")
    return token.id


@task(id="keyed-wait")
async def keyed_wait(payload, ctx):
    await wait.for_(seconds=2, idempotency_key="cool")
    return "waited"


class Numbered(BaseModel):
    n: int


@schema_task(id="numbered", schema=Numbered)
async def numbered(payload, ctx):
    return payload.n


@task(id="echo")
async def echo(payload, ctx):
    return payload


solo = queue("solo", concurrency_limit=1)


@task(id="solo-parent", queue=solo)
async def solo_parent(payload, ctx):
    return (await solo_child.trigger_and_wait(7)).unwrap()


@task(id="solo-child", queue=solo)
async def solo_child(payload, ctx):
    return payload * 6


@task(id="batch-parent", retry={"max_attempts": 1})
async def batch_parent(payload, ctx):
    try:
        result = await batch.trigger_and_wait([
            {"id": "numbered", "payload": {"n": 1}},
            {"id": "numbered", "payload": {"n": "x"}},
            {"id": "echo", "payload": {"i": 2}},
        ])
    except Exception as exc:
        return {"error": str(exc)}
    return {"runs": [[r.task_identifier, r.ok] for r in result.runs]}
"""

FAST = {"TRIGGER_CHECKPOINT_AFTER": "0.3"}


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _run(client: httpx.Client, run_id: str) -> dict[str, Any]:
    data: dict[str, Any] = client.get(f"/api/v3/runs/{run_id}").json()
    return data


def _complete_waiting_tokens(client: httpx.Client, tag: str) -> int:
    page = client.get(
        "/api/v1/waitpoints/tokens",
        params={"filter[tags]": tag, "filter[status]": "WAITING", "page[size]": "100"},
    ).json()
    for token in page["data"]:
        client.post(f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": "go"})
    return len(page["data"])


def _project(tmp_path: Path, api: ApiServer) -> Project:
    return make_project(tmp_path, api, {"tasks.py": TASKS})


def _assert_no_nondeterminism(run: dict[str, Any]) -> None:
    assert "NON_DETERMINISTIC" not in json.dumps(run), run


def test_wait_then_raise_retries_and_completes(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Case 1 of issue 18: a checkpointing duration wait, then an exception on attempt 1."""
    project = _project(tmp_path, api_server)
    workers.append(start_worker(project, **FAST))
    client = project.client()
    log = tmp_path / "log.jsonl"
    run_id = trigger(client, "nap-then-raise", {"log": str(log)})
    run = wait_final(client, run_id, timeout=60)
    _assert_no_nondeterminism(run)
    assert run["status"] == "COMPLETED", run
    assert run["output"] == {"attempt": 2}
    assert run["attemptCount"] == 2
    # attempt 2 waited again, from the top (its own wait, not attempt 1's)
    assert [line["attempt"] for line in _lines(log)] == [1, 2]


def _token_fault_run(
    project: Project, tmp_path: Path, fault: str
) -> tuple[httpx.Client, str, Path, str]:
    client = project.client()
    log = tmp_path / f"{fault}.jsonl"
    tag = f"t-{fault}-{project.ref}"
    run_id = trigger(client, "token-then-fault", {"log": str(log), "tag": tag, "fault": fault})
    # attempt 1 checkpoints on its token; complete it so it resumes (and then faults)
    wait_for(lambda: _run(client, run_id)["status"] == "WAITING", what="attempt 1 waiting")
    assert _complete_waiting_tokens(client, tag) == 1
    return client, run_id, log, tag


def _finish_attempt_two(client: httpx.Client, run_id: str, log: Path, tag: str) -> None:
    # attempt 2 runs from the top: a new step value, a new token, which it waits on
    wait_for(
        lambda: any(line.get("attempt") == 2 and "token" in line for line in _lines(log)),
        timeout=60,
        what="attempt 2 to create its token",
    )
    wait_for(lambda: _complete_waiting_tokens(client, tag) == 1, what="attempt 2's token")
    run = wait_final(client, run_id, timeout=60)
    _assert_no_nondeterminism(run)
    assert run["status"] == "COMPLETED", run
    # attempt 2's own step value, before and after its checkpoint (issue 19 item 8)
    assert run["output"] == {"attempt": 2, "step": 2}
    tokens = [line["token"] for line in _lines(log) if "token" in line]
    assert len(set(tokens)) == 2, tokens


def test_executor_killed_after_the_wait_retries_and_completes(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Case 2: the executor is SIGKILLed after the (checkpointed) wait of attempt 1."""
    project = _project(tmp_path, api_server)
    workers.append(start_worker(project, **FAST))
    client, run_id, log, tag = _token_fault_run(project, tmp_path, "kill")
    _finish_attempt_two(client, run_id, log, tag)


def test_worker_frozen_past_its_lease_retries_and_completes(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Case 3: the whole worker is frozen (SIGSTOP) past its lease after attempt 1's wait;
    attempt 2 runs on another worker; the frozen one, thawed, records nothing."""
    project = _project(tmp_path, api_server)
    frozen = start_worker(project, "frozen", **FAST)
    workers.append(frozen)
    client, run_id, log, tag = _token_fault_run(project, tmp_path, "freeze")
    wait_for(
        lambda: any(line.get("after_wait") for line in _lines(log)), what="attempt 1 resumed"
    )
    frozen.signal_all(signal.SIGSTOP)
    try:
        # the lease (3 s in tests) expires: TASK_RUN_STALLED_EXECUTING, retried elsewhere
        workers.append(start_worker(project, "spare", **FAST))
        wait_for(
            lambda: any(line.get("attempt") == 2 and "token" in line for line in _lines(log)),
            timeout=60,
            what="attempt 2 to start on the spare worker",
        )
    finally:
        frozen.signal_all(signal.SIGCONT)
    _finish_attempt_two(client, run_id, log, tag)
    attempts = client.get(f"/api/v3/runs/{run_id}").json()["attemptCount"]
    assert attempts == 2


def _parent_run(
    api: ApiServer,
    tmp_path: Path,
    workers: list[WorkerProcess],
    key: str | None,
    child_fails: bool,
) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    project = _project(tmp_path, api)
    workers.append(start_worker(project, concurrency=2, **FAST))
    client = project.client()
    log = tmp_path / "parent.jsonl"
    payload = {"log": str(log), "key": key, "child_fails": child_fails}
    run = wait_final(client, trigger(client, "parent", payload), timeout=60)
    _assert_no_nondeterminism(run)
    children = client.get("/api/v1/runs", params={"filter[taskIdentifier]": "child"}).json()
    by_attempt = {line["attempt"]: line for line in _lines(log)}  # replays write lines again
    return run, [by_attempt[n] for n in sorted(by_attempt)], len(children["data"])


def test_a_retried_parent_gets_a_fresh_child(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Case 4a: the child fails, the parent's attempt fails and retries: attempt 2 triggers a
    new child (as Trigger.dev) and, after its checkpoint, gets that child's result."""
    run, lines, children = _parent_run(api_server, tmp_path, workers, None, child_fails=True)
    assert run["status"] == "COMPLETED", run
    assert children == 2
    first, second = lines
    assert (first["attempt"], first["ok"], second["attempt"], second["ok"]) == (1, False, 2, True)
    assert first["child"] != second["child"]
    assert run["output"] == {
        "attempt": 2,
        "step": 2,
        "child": second["child"],
        "ok": True,
        "output": "child ok",
    }


def test_a_retried_parent_with_an_idempotency_key_reuses_its_child(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Case 4b: the parent fails after its child completed; with an idempotency key (a plain
    string: scoped to the run, so the same in every attempt) attempt 2 gets that child back
    instead of triggering another. (A child that failed gives its key back, as in
    Trigger.dev: then the retry gets a fresh child even with the key.)"""
    run, lines, children = _parent_run(
        api_server, tmp_path, workers, "the-child", child_fails=False
    )
    assert run["status"] == "COMPLETED", run
    first, second = lines
    assert first["child"] == second["child"] and children == 1
    assert run["output"] == {
        "attempt": 2,
        "step": 2,
        "child": first["child"],
        "ok": True,
        "output": "child ok",
    }


def test_wait_and_token_idempotency_keys_are_scoped_to_the_run(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Issue 19 item 2: the same plain key in two runs names two waits and two tokens."""
    project = _project(tmp_path, api_server)
    workers.append(start_worker(project, concurrency=2, **FAST))
    client = project.client()
    tokens = [trigger(client, "keyed-token") for _ in range(2)]
    ids = [wait_final(client, r)["output"] for r in tokens]
    assert ids[0] != ids[1], ids

    first = wait_final(client, trigger(client, "keyed-wait"))
    second = wait_final(client, trigger(client, "keyed-wait"))
    assert first["status"] == second["status"] == "COMPLETED"
    for run in (first, second):  # each run waited its own 2 s
        took = _seconds(run["finishedAt"]) - _seconds(run["startedAt"])
        assert took >= 1.9, run


def _seconds(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def test_a_waited_batch_with_a_refused_item_fails_clearly(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Issue 19 item 3: no result may vanish (and shift the others): the call fails, naming
    the refused item, and no run of the batch is created."""
    project = _project(tmp_path, api_server)
    workers.append(start_worker(project, **FAST))
    client = project.client()
    run = wait_final(client, trigger(client, "batch-parent"))
    assert run["status"] == "COMPLETED", run
    error = run["output"]["error"]
    assert "item 1 (numbered)" in error, error
    listed = client.get("/api/v1/runs", params={"filter[taskIdentifier]": "numbered,echo"})
    assert listed.json()["data"] == []


def test_a_parent_whose_child_is_still_queued_checkpoints_at_once(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Parent and child share a limit-1 queue: the child cannot start while the parent holds
    the slot. The parent sees its child still queued and checkpoints at once, instead of
    holding the slot for ``checkpoint_after`` (an hour here: a deadlock until then)."""
    project = _project(tmp_path, api_server)
    workers.append(start_worker(project, TRIGGER_CHECKPOINT_AFTER="3600"))
    client = project.client()
    run = wait_final(client, trigger(client, "solo-parent"), timeout=30)
    assert run["status"] == "COMPLETED", run
    assert run["output"] == 42
