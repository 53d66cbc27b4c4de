"""Direct hand-off (engine/handoff.py): a trigger that finds a worker's long-poll waiting in the
same API process leases the run to it inside the trigger's own transaction. Real API process,
real Postgres, a protocol-level worker over HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker


class LongPoll(threading.Thread):
    """One ``/dequeue`` long-poll in the background; ``runs`` once it answered."""

    def __init__(self, worker: ProtocolWorker, wait_ms: int = 10_000) -> None:
        super().__init__(daemon=True)
        self.worker, self.wait_ms = worker, wait_ms
        self.runs: list[dict[str, Any]] | None = None

    def run(self) -> None:
        self.runs = self.worker.dequeue(max_runs=5, wait_ms=self.wait_ms)


def _trigger(client: httpx.Client, task: str) -> str:
    reply = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 1})
    reply.raise_for_status()
    return str(reply.json()["id"])


def _row(database_url: str, run_id: str) -> tuple[Any, ...]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT r.status, r.lease_owner::text, r.created_at, a.started_at FROM runs r "
            "LEFT JOIN run_attempts a ON a.run_id = r.id WHERE r.id = %s "
            "ORDER BY a.number DESC LIMIT 1", (run_id,)).fetchone()
    assert row is not None
    return tuple(row)


def _waiting(poll: LongPoll) -> None:
    poll.start()
    time.sleep(0.5)  # the long-poll has found nothing and waits
    assert poll.runs is None


def test_a_trigger_leases_to_the_waiting_long_poll_in_its_own_transaction(
    env: tuple[httpx.Client, str], api_server: ApiServer, database_url: str
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["handed"])
    poll = LongPoll(worker)
    _waiting(poll)
    run_id = _trigger(client, "handed")
    poll.join(timeout=8)
    assert poll.runs is not None and [r["run_id"] for r in poll.runs] == [run_id]
    assert poll.runs[0]["attempt_number"] == 1 and poll.runs[0]["payload"] == "1"
    status, owner, created_at, started_at = _row(database_url, run_id)
    assert (status, owner) == ("EXECUTING", worker.instance_id)
    # now() is the transaction's start: the same for the insert and the lease
    assert started_at == created_at
    assert worker.complete(poll.runs[0], ok=True, output="2",
                           output_type="application/json")["status"] == "COMPLETED"


def test_a_hand_off_keeps_the_queue_limit(
    env: tuple[httpx.Client, str], api_server: ApiServer, database_url: str
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["one-at-a-time"],
                            queue={"name": "handoff-q", "concurrency_limit": 1})
    first = _trigger(client, "one-at-a-time")
    held = worker.dequeue(wait_ms=2000)
    assert [r["run_id"] for r in held] == [first]
    poll = LongPoll(worker, wait_ms=1500)
    _waiting(poll)
    second = _trigger(client, "one-at-a-time")
    poll.join(timeout=8)
    assert poll.runs == []  # the queue is full: nothing was handed over
    assert _row(database_url, second)[0] == "PENDING"
    worker.complete(held[0], ok=True, output="1", output_type="application/json")
    assert [r["run_id"] for r in worker.dequeue(wait_ms=2000)] == [second]


def test_runs_handed_to_a_long_poll_whose_worker_hung_up_go_back_at_once(
    env: tuple[httpx.Client, str], api_server: ApiServer, database_url: str
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["deserted"])
    body = {"instance_id": worker.instance_id, "versions": [worker.version_id],
            "max_runs": 1, "wait_ms": 20_000}
    with pytest.raises(httpx.ReadTimeout):  # the worker gives up on its long-poll
        worker.http.post("/engine/v1/worker/dequeue", json=body, timeout=0.5)
    # the API notices the hang-up at its next look (within 1 s): the trigger comes first
    run_id = _trigger(client, "deserted")
    time.sleep(1.5)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, started_at = created_at, attempt_number FROM runs "
                           "WHERE id = %s", (run_id,)).fetchone()
    # it was leased in the trigger's transaction (started_at is its now()), then handed back
    # at once (its 3 s lease had not expired) and its attempt does not count
    assert row == ("PENDING", True, 0)
    again = worker.dequeue(wait_ms=2000)
    assert [r["run_id"] for r in again] == [run_id]
