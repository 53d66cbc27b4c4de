"""Direct hand-off (engine/handoff.py): a trigger that finds a worker's long-poll waiting in the
same API process leases the run to it inside the trigger's own transaction. Real API process,
real Postgres, a protocol-level worker over HTTP."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import psycopg
import psycopg.rows
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


def _warm(client: httpx.Client, worker: ProtocolWorker, task: str) -> None:
    """One trigger run through: the API process has the task's definition cached since (the
    plain trigger's one round trip, engine/task_defs.py), and nothing is left queued."""
    _trigger(client, task)
    [run] = worker.dequeue(wait_ms=2000)
    worker.complete(run, ok=True, output="1", output_type="application/json")


def _lease_row(database_url: str, run_id: str) -> dict[str, Any]:
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute(
            "SELECT r.status, r.lease_owner::text AS owner, r.version_id::text AS version, "
            "r.attempt_number, r.max_attempts, r.machine, r.expires_at, r.retry, "
            "r.lease_locked_version, r.started_at = r.created_at AS started_in_trigger, "
            "r.updated_at = r.created_at AS one_write, "
            "(SELECT count(*) FROM run_attempts a WHERE a.run_id = r.id AND a.number = 1 "
            " AND a.status = 'EXECUTING') AS attempts "
            "FROM runs r WHERE r.id = %s", (run_id,)).fetchone()
    assert row is not None
    return dict(row)


def test_a_cached_trigger_inserts_its_run_leased_to_the_waiting_long_poll(
    env: tuple[httpx.Client, str], api_server: ApiServer, database_url: str
) -> None:
    """The one-run case: the run is written once, already leased, as the dequeue statement
    would have leased it (attempt, version, retry settings of the version's task)."""
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["at-insert"], ttl="1h",
                            retry={"max_attempts": 4})
    _warm(client, worker, "at-insert")
    poll = LongPoll(worker)
    _waiting(poll)
    run_id = _trigger(client, "at-insert")
    poll.join(timeout=8)
    assert poll.runs is not None and [r["run_id"] for r in poll.runs] == [run_id]
    handed = poll.runs[0]
    assert handed["attempt_number"] == 1 and handed["payload"] == "1"
    assert handed["version_id"] == worker.version_id and handed["max_attempts"] == 4
    row = _lease_row(database_url, run_id)
    assert row == {
        "status": "EXECUTING", "owner": worker.instance_id, "version": worker.version_id,
        "attempt_number": 1, "max_attempts": 4, "machine": "small-1x", "expires_at": None,
        "retry": {"max_attempts": 4}, "lease_locked_version": True,
        "started_in_trigger": True, "one_write": True, "attempts": 1,
    }
    assert worker.complete(handed, ok=True, output="2",
                           output_type="application/json")["status"] == "COMPLETED"


def test_a_cached_trigger_behind_another_queued_run_lets_the_long_poll_look_itself(
    env: tuple[httpx.Client, str], api_server: ApiServer, database_url: str
) -> None:
    """Another run is queued (of a task this worker does not have): the insert does not lease
    (not the one-run case), the long-poll looks by itself and leases by the pick."""
    client, key = env
    ProtocolWorker(api_server.url, key, ["elsewhere"])  # registered, never dequeues
    worker = ProtocolWorker(api_server.url, key, ["behind"])
    _warm(client, worker, "behind")
    other = _trigger(client, "elsewhere")
    poll = LongPoll(worker)
    _waiting(poll)
    run_id = _trigger(client, "behind")
    poll.join(timeout=8)
    assert poll.runs is not None and [r["run_id"] for r in poll.runs] == [run_id]
    row = _lease_row(database_url, run_id)
    assert (row["status"], row["owner"]) == ("EXECUTING", worker.instance_id)
    assert not row["one_write"]  # inserted PENDING, then leased by the dequeue statement
    assert _row(database_url, other)[0] == "PENDING"


def test_a_cached_trigger_into_a_paused_queue_hands_nothing(
    env: tuple[httpx.Client, str], api_server: ApiServer, database_url: str
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["paused"])
    _warm(client, worker, "paused")
    reply = client.post("/api/v1/queues/task%2Fpaused/pause", json={"action": "pause"})
    assert reply.status_code == 200, reply.text
    poll = LongPoll(worker, wait_ms=1500)
    _waiting(poll)
    run_id = _trigger(client, "paused")
    poll.join(timeout=8)
    assert poll.runs == []
    assert _row(database_url, run_id)[:2] == ("PENDING", None)
    client.post("/api/v1/queues/task%2Fpaused/pause", json={"action": "resume"})
    assert [r["run_id"] for r in worker.dequeue(wait_ms=2000)] == [run_id]


def test_concurrent_cached_triggers_hand_over_no_more_than_the_queue_limit(
    env: tuple[httpx.Client, str], api_server: ApiServer, database_url: str
) -> None:
    """Triggers racing each other, each finding a waiting long-poll: the insert takes the
    environment's lock inside its statement (trigger_handoff_room_v1), and counts after it; a
    count in the insert's own snapshot, taken before the lock, would miss the lease another
    trigger committed meanwhile and hand over a second run into a queue of one."""
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["race"],
                            queue={"name": "race-q", "concurrency_limit": 1})
    _warm(client, worker, "race")
    for _ in range(4):
        polls = [LongPoll(worker, wait_ms=1000) for _ in range(4)]
        for poll in polls:
            poll.start()
        time.sleep(0.3)  # all four wait
        start = threading.Barrier(4)
        ids: list[str] = []

        def fire(start: threading.Barrier, ids: list[str]) -> None:
            start.wait()
            ids.append(_trigger(client, "race"))

        firing = [threading.Thread(target=fire, args=(start, ids)) for _ in range(4)]
        for thread in firing:
            thread.start()
        for thread in firing + polls:  # type: ignore[operator]
            thread.join(timeout=10)
        handed = [run for poll in polls for run in poll.runs or []]
        with psycopg.connect(database_url) as conn:
            running = conn.execute("SELECT count(*) FROM runs WHERE queue = 'race-q' AND "
                                   "status = 'EXECUTING' AND id = ANY(%s)", (ids,)).fetchone()
        assert len(handed) <= 1 and running == (len(handed),), (handed, running)
        for run in handed:  # then the rest, one at a time
            worker.complete(run, ok=True, output="1", output_type="application/json")
        for _ in range(len(ids) - len(handed)):
            [run] = worker.dequeue(wait_ms=2000)
            worker.complete(run, ok=True, output="1", output_type="application/json")
