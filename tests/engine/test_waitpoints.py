"""Waitpoints, the journal, checkpoints and resumes through the real API (protocol level)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker


def _trigger(
    client: httpx.Client, task: str, payload: object = None, **options: object
) -> dict[str, Any]:
    reply = client.post(
        f"/api/v1/tasks/{task}/trigger", json={"payload": payload, "options": options}
    )
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _status(client: httpx.Client, run_id: str) -> str:
    return str(client.get(f"/api/v3/runs/{run_id}").json()["status"])


def _wait_status(client: httpx.Client, run_id: str, status: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while _status(client, run_id) != status:
        assert time.monotonic() < deadline, f"{run_id} is {_status(client, run_id)}, not {status}"
        time.sleep(0.05)


def _checkpoint(client: httpx.Client, worker: ProtocolWorker, run: dict[str, Any]) -> bool:
    reply = client.post(
        f"/engine/v1/runs/{run['run_id']}/checkpoint",
        json={"instance_id": worker.instance_id, "attempt_number": run["attempt_number"]},
    )
    assert reply.status_code == 200, reply.text
    return bool(reply.json()["suspended"])


def test_tokens_complete_once_and_by_signed_callback(env: tuple[httpx.Client, str]) -> None:
    client, _ = env
    token = client.post("/api/v1/waitpoints/tokens", json={"tags": ["hitl"]}).json()
    assert token["id"].startswith("waitpoint_") and token["publicAccessToken"]
    done = client.post(
        f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": {"ok": 1}}
    )
    assert done.json() == {"success": True}
    again = client.post(f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": 2})
    assert again.status_code == 200  # harmless
    row = client.get(f"/api/v1/waitpoints/tokens/{token['id']}").json()
    assert row["status"] == "COMPLETED" and row["output"] == '{"ok":1}'

    other = client.post("/api/v1/waitpoints/tokens", json={}).json()
    forged = other["url"][:-4] + "0000"
    assert httpx.post(forged, json={"a": 1}).status_code == 401
    assert httpx.post(other["url"], json={"approved": True}).json() == {"success": True}
    listed = client.get("/api/v1/waitpoints/tokens", params={"filter[tags]": "hitl"}).json()["data"]
    assert [t["id"] for t in listed] == [token["id"]]
    browser = httpx.post(
        f"{client.base_url}/api/v1/waitpoints/tokens/{token['id']}/complete",
        headers={"Authorization": f"Bearer {other['publicAccessToken']}"},
        json={"data": 1},
    )
    assert browser.status_code == 403  # a token scoped to another waitpoint


def test_token_timeout_and_idempotency(env: tuple[httpx.Client, str]) -> None:
    client, _ = env
    short = client.post("/api/v1/waitpoints/tokens", json={"timeout": "1s"}).json()
    deadline = time.monotonic() + 10
    while client.get(f"/api/v1/waitpoints/tokens/{short['id']}").json()["status"] == "WAITING":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    row = client.get(f"/api/v1/waitpoints/tokens/{short['id']}").json()
    assert row["status"] == "TIMED_OUT" and row["outputIsError"]
    a = client.post("/api/v1/waitpoints/tokens", json={"idempotencyKey": "k1"}).json()
    b = client.post("/api/v1/waitpoints/tokens", json={"idempotencyKey": "k1"}).json()
    assert a["id"] == b["id"] and b["isCached"]


def test_a_run_waiting_on_a_token_checkpoints_and_resumes(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(
        api_server.url, key, ["waiter"], queue={"name": "one", "concurrency_limit": 1}
    )
    run_id = _trigger(client, "waiter", 1)["id"]
    other_id = _trigger(client, "waiter", 2)["id"]
    [run] = worker.dequeue(max_runs=5)  # the queue has one slot
    token = client.post("/api/v1/waitpoints/tokens", json={}).json()
    wait = client.post(
        f"/engine/v1/runs/{run_id}/wait",
        json={
            "seq": 0,
            "instance_id": worker.instance_id,
            "kind": "wait_token",
            "waitpoint_id": token["id"],
        },
    ).json()
    assert wait["status"] == "WAITING"
    assert _checkpoint(client, worker, run)
    assert _status(client, run_id) == "WAITING"
    [other] = worker.dequeue(max_runs=5)  # the slot was released at the checkpoint
    assert other["run_id"] == other_id
    worker.complete(other, ok=True, output="1")
    client.post(f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": {"go": True}})
    _wait_status(client, run_id, "QUEUED")
    [resumed] = worker.dequeue(max_runs=5)
    assert resumed["run_id"] == run_id and resumed["resumed"]
    assert resumed["attempt_number"] == run["attempt_number"]  # the same attempt continues
    [entry] = resumed["journal"]
    assert entry["kind"] == "wait_token" and entry["waitpoint"]["output"] == '{"go":true}'
    assert worker.complete(resumed, ok=True, output='"done"')["outcome"] == "RUN_FINISHED"
    assert len(client.get(f"/api/v3/runs/{run_id}").json()["attempts"]) == 1


def test_completed_before_checkpoint_means_no_suspend(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["quick"])
    run_id = _trigger(client, "quick")["id"]
    [run] = worker.dequeue()
    token = client.post("/api/v1/waitpoints/tokens", json={}).json()
    client.post(
        f"/engine/v1/runs/{run_id}/wait",
        json={
            "seq": 0,
            "instance_id": worker.instance_id,
            "kind": "wait_token",
            "waitpoint_id": token["id"],
        },
    )
    client.post(f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": 1})
    polled = client.get(f"/engine/v1/waitpoints/{token['id']}/wait", params={"timeout_ms": 100})
    assert polled.json()["status"] == "COMPLETED"
    assert not _checkpoint(client, worker, run)  # nothing to wait for: keep executing
    assert _status(client, run_id) == "EXECUTING"


def test_duration_wait_resumes_after_its_time(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["sleeper"])
    run_id = _trigger(client, "sleeper")["id"]
    [run] = worker.dequeue()
    wp = client.post(
        f"/engine/v1/runs/{run_id}/wait",
        json={
            "seq": 0,
            "instance_id": worker.instance_id,
            "kind": "wait_duration",
            "until": "1s",
            "idempotency_key": "nap",
        },
    ).json()
    assert wp["type"] == "DURATION"
    assert _checkpoint(client, worker, run)
    [resumed] = worker.dequeue(wait_ms=10_000)
    assert (
        resumed["run_id"] == run_id and resumed["journal"][0]["waitpoint"]["status"] == "COMPLETED"
    )
    # an idempotent wait that already happened does not wait again
    again = client.post(
        f"/engine/v1/runs/{run_id}/wait",
        json={
            "seq": 1,
            "instance_id": worker.instance_id,
            "kind": "wait_duration",
            "until": "1h",
            "idempotency_key": "nap",
        },
    ).json()
    assert again["id"] == wp["id"] and again["status"] == "COMPLETED"


def test_trigger_and_wait_without_deadlock_in_a_one_slot_queue(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(
        api_server.url, key, ["parent", "child"], queue={"name": "solo", "concurrency_limit": 1}
    )
    parent_id = _trigger(client, "parent")["id"]
    [parent] = worker.dequeue()
    child = _trigger(
        client,
        "child",
        {"x": 1},
        parentRunId=parent_id,
        resumeParentOnCompletion=True,
        journalSeq=0,
    )
    assert child["waitpointId"]
    assert worker.dequeue() == []  # the parent holds the only slot
    assert _checkpoint(client, worker, parent)  # ... until it checkpoints
    [running_child] = worker.dequeue()
    assert running_child["run_id"] == child["id"]
    worker.complete(running_child, ok=True, output='{"y":2}')
    [resumed] = worker.dequeue(wait_ms=10_000)
    assert resumed["run_id"] == parent_id
    [entry] = resumed["journal"]
    assert entry["kind"] == "trigger_and_wait" and entry["key"] == "child"
    assert entry["outcome"]["id"] == child["id"]
    assert entry["waitpoint"]["output"] == '{"y":2}' and not entry["waitpoint"]["output_is_error"]


def test_batch_trigger_and_wait_results_in_item_order(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["p", "c"])
    parent_id = _trigger(client, "p")["id"]
    [parent] = worker.dequeue()
    batch = client.post(
        "/api/v1/tasks/c/batch",
        json={
            "items": [{"payload": i} for i in range(3)],
            "options": {
                "parentRunId": parent_id,
                "resumeParentOnCompletion": True,
                "journalSeq": 0,
            },
        },
    ).json()
    assert _checkpoint(client, worker, parent)
    children = worker.dequeue(max_runs=3)
    for run in reversed(children):  # finish in reverse order; results stay in item order
        failed = run["payload"] == "1"
        worker.complete(
            run,
            ok=not failed,
            output=run["payload"],
            error=({"type": "STRING_ERROR", "raw": "no"} if failed else None),
            skipped_retrying=failed,
        )
    [resumed] = worker.dequeue(wait_ms=10_000)
    import json

    results = json.loads(resumed["journal"][0]["waitpoint"]["output"])
    assert [r["id"] for r in results] == [r["id"] for r in batch["runs"]]
    assert [r["ok"] for r in results] == [True, False, True]


def test_a_different_operation_at_a_journal_position_is_refused(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["det"])
    run_id = _trigger(client, "det")["id"]
    worker.dequeue()
    first = client.post(
        f"/engine/v1/runs/{run_id}/journal",
        json={
            "seq": 0,
            "instance_id": worker.instance_id,
            "kind": "step",
            "key": "charge",
            "outcome": 42,
        },
    )
    assert first.status_code == 200
    same = client.post(
        f"/engine/v1/runs/{run_id}/journal",
        json={
            "seq": 0,
            "instance_id": worker.instance_id,
            "kind": "step",
            "key": "charge",
            "outcome": 43,
        },
    )
    assert same.status_code == 200
    other = client.post(
        f"/engine/v1/runs/{run_id}/journal",
        json={
            "seq": 0,
            "instance_id": worker.instance_id,
            "kind": "step",
            "key": "refund",
            "outcome": 1,
        },
    )
    assert other.status_code == 409
    assert "NON_DETERMINISTIC" in other.json()["error"] and "charge" in other.json()["error"]
