"""Issue 19 item 1 in the engine: a run locked to a version nobody serves migrates to the newest
version that has its task, or waits in PENDING_VERSION with a reason (docs/run-states.md,
"Versions"). Real API and Postgres; the workers speak the protocol over HTTP."""

from __future__ import annotations

import time

import httpx
import psycopg

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker


def _trigger(client: httpx.Client, task: str, payload: object, **options: object) -> str:
    reply = client.post(f"/api/v1/tasks/{task}/trigger",
                        json={"payload": payload, "options": options})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def _run(client: httpx.Client, run_id: str) -> dict[str, object]:
    run: dict[str, object] = client.get(f"/api/v3/runs/{run_id}").json()
    return run


def _stop(worker: ProtocolWorker) -> None:
    worker.post("/engine/v1/worker/heartbeat",
                {"instance_id": worker.instance_id, "run_ids": [], "stopping": True})


def test_a_retry_after_a_deploy_migrates_and_a_pinned_run_waits_with_a_reason(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    old = ProtocolWorker(api_server.url, key, ["mv"])
    with psycopg.connect(api_server.database_url) as conn:
        (old_name,) = conn.execute(
            "SELECT version FROM worker_versions WHERE id = %s", (old.version_id,)
        ).fetchone()  # type: ignore[misc]
    locked = _trigger(client, "mv", 1, maxAttempts=3)
    [leased] = old.dequeue()
    assert leased["run_id"] == locked and leased["version_id"] == old.version_id
    failed = old.complete(leased, ok=False, retry={"delay_ms": 0},
                          error={"type": "BUILT_IN_ERROR", "name": "E", "message": "again"})
    assert failed["outcome"] == "RETRY_QUEUED", failed
    pinned = _trigger(client, "mv", 2, lockToVersion=old_name)

    _stop(old)  # the deploy: version `old_name` is served by nobody now
    new = ProtocolWorker(api_server.url, key, ["mv"])
    [again] = new.dequeue(max_runs=5, wait_ms=5000)
    # the locked run moves on (the version sweep may have parked it for a moment between the
    # stop and the new registration: the long-poll waits for its release); the pinned does not
    assert again["run_id"] == locked and again["attempt_number"] == 2
    assert again["version_id"] == new.version_id
    new.complete(again, ok=True, output='"moved"')
    done = _run(client, locked)
    assert done["status"] == "COMPLETED" and done["version"] != old_name, done

    deadline = time.monotonic() + 15
    while _run(client, pinned)["status"] != "PENDING_VERSION":
        assert time.monotonic() < deadline, _run(client, pinned)
        time.sleep(0.05)
    reason = str(_run(client, pinned)["statusReason"])
    assert f"pinned to version {old_name}" in reason, reason

    with psycopg.connect(api_server.database_url) as conn:
        (old_hash,) = conn.execute(
            "SELECT content_hash FROM worker_versions WHERE id = %s", (old.version_id,)
        ).fetchone()  # type: ignore[misc]
    back = ProtocolWorker(api_server.url, key, ["mv"])  # then a worker with the old code again
    back.post("/engine/v1/worker/register", {"instance_id": back.instance_id,
                                             "content_hash": old_hash,
                                             "tasks": [{"id": "mv", "queue": {"name": "task/mv"}}]})
    deadline = time.monotonic() + 15
    while _run(client, pinned)["status"] != "QUEUED":
        assert time.monotonic() < deadline, _run(client, pinned)
        time.sleep(0.05)
    assert "statusReason" not in _run(client, pinned)
