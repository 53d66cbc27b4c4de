"""Run semantics of issue 3 through the real API: queues and concurrency, ordering, delays,
TTL, idempotency, debounce, versions, replay, cascade cancel, filters, large payloads."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx
import psycopg

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker


def _trigger(client: httpx.Client, task: str, payload: object = None, **options: object) -> str:
    reply = client.post(
        f"/api/v1/tasks/{task}/trigger", json={"payload": payload, "options": options}
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def _status(client: httpx.Client, run_id: str) -> str:
    return str(client.get(f"/api/v3/runs/{run_id}").json()["status"])


def _replica(api: ApiServer, key: str, like: ProtocolWorker) -> ProtocolWorker:
    """A second worker replica serving the same version."""
    other = ProtocolWorker(api.url, key, [])
    other.version_id = like.version_id
    return other


def test_queue_limit_holds_across_replicas(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    a = ProtocolWorker(
        api_server.url, key, ["q1", "q2"], queue={"name": "shared", "concurrency_limit": 2}
    )
    b = _replica(api_server, key, a)
    ids = [_trigger(client, "q1" if i % 2 else "q2", i) for i in range(6)]
    first = a.dequeue(max_runs=10)
    assert len(first) == 2
    assert b.dequeue(max_runs=10) == []  # the other replica sees the same limit
    a.complete(first[0], ok=True, output="1")
    [third] = b.dequeue(max_runs=10)
    assert third["run_id"] == ids[2]  # FIFO within the queue
    queue = client.get("/api/v1/queues/shared").json()
    assert queue["running"] == 2 and queue["queued"] == 3 and queue["concurrencyLimit"] == 2


def test_pause_resume_and_override(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    worker = ProtocolWorker(
        api_server.url, key, ["p"], queue={"name": "pq", "concurrency_limit": 1}
    )
    for i in range(4):
        _trigger(client, "p", i)
    assert client.post("/api/v1/queues/pq/pause", json={"action": "pause"}).json()["paused"]
    assert worker.dequeue(max_runs=5) == []
    client.post("/api/v1/queues/pq/pause", json={"action": "resume"})
    assert len(worker.dequeue(max_runs=5)) == 1
    override = client.post("/api/v1/queues/pq/concurrency/override", json={"concurrencyLimit": 3})
    assert override.json()["concurrencyLimit"] == 3
    assert len(worker.dequeue(max_runs=5)) == 2
    reset = client.post("/api/v1/queues/pq/concurrency/reset").json()
    assert reset["concurrencyLimit"] == 1 and reset["running"] == 3
    assert client.get("/api/v1/queues/p", params={"type": "task"}).status_code == 404
    assert client.post("/api/v1/queues/nope/pause", json={"action": "pause"}).status_code == 404
    bad = client.post("/api/v1/queues/pq/concurrency/override", json={"concurrencyLimit": -1})
    assert bad.status_code == 422


def test_concurrency_keys_get_their_own_limit_and_round_robin(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(
        api_server.url, key, ["t"], queue={"name": "tenants", "concurrency_limit": 2}
    )
    heavy = [_trigger(client, "t", i, concurrencyKey="heavy") for i in range(10)]
    light = [_trigger(client, "t", i, concurrencyKey="light") for i in range(2)]
    leased = {r["run_id"] for r in worker.dequeue(max_runs=3)}
    # one per tenant per pass, oldest heads first: the light tenant is not starved
    assert leased == {heavy[0], light[0], heavy[1]}
    more = [r["run_id"] for r in worker.dequeue(max_runs=10)]
    assert more == [light[1]]  # heavy is at its limit of 2; light gets its second slot


def test_environment_limit(
    env: tuple[httpx.Client, str], api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["e1", "e2"])
    with psycopg.connect(api_server.database_url) as conn:
        conn.execute(
            "UPDATE environments SET concurrency_limit = 3 WHERE id = "
            "(SELECT environment_id FROM api_keys WHERE key_prefix = %s)",
            (key[:11],),
        )
    for i in range(5):
        _trigger(client, "e1" if i % 2 else "e2", i)
    assert len(worker.dequeue(max_runs=10)) == 3
    assert worker.dequeue(max_runs=10) == []


def test_priority_orders_within_the_queue(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["pr"])
    plain = _trigger(client, "pr", 1)
    urgent = _trigger(client, "pr", 2, priority=60)
    assert [r["run_id"] for r in worker.dequeue(max_runs=2)] == [urgent, plain]


def test_delay_reschedule_and_ttl(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["d"])
    delayed = _trigger(client, "d", 1, delay="1h")
    run = client.get(f"/api/v3/runs/{delayed}").json()
    assert run["status"] == "DELAYED" and run["delayedUntil"]
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    moved = client.post(f"/api/v1/runs/{delayed}/reschedule", json={"delay": soon})
    assert moved.status_code == 200 and moved.json()["status"] == "DELAYED"
    [leased] = worker.dequeue(wait_ms=10_000)
    assert leased["run_id"] == delayed
    refused = client.post(f"/api/v1/runs/{delayed}/reschedule", json={"delay": "1m"})
    assert refused.status_code == 409 and "only a DELAYED run" in refused.json()["error"]

    expiring = _trigger(client, "d", 2, ttl="1s")
    deadline = time.monotonic() + 15
    while _status(client, expiring) != "EXPIRED" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _status(client, expiring) == "EXPIRED"
    assert worker.dequeue() == []  # never leased
    assert (
        client.post(
            "/api/v1/tasks/d/trigger", json={"payload": 1, "options": {"ttl": "0.1s"}}
        ).status_code
        == 422
    )


def test_idempotency_keys(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["idem"], retry={"max_attempts": 1})
    ikey = uuid.uuid4().hex

    def send(_: int) -> str:
        return _trigger(client, "idem", 1, idempotencyKey=ikey)

    with ThreadPoolExecutor(20) as pool:
        ids = set(pool.map(send, range(100)))
    assert len(ids) == 1  # 100 concurrent triggers, one run
    [run_id] = ids
    [leased] = worker.dequeue()
    worker.complete(leased, ok=False, error={"type": "STRING_ERROR", "raw": "x"})
    assert _status(client, run_id) == "FAILED"
    again = _trigger(client, "idem", 1, idempotencyKey=ikey)
    assert again != run_id  # a failed run releases its key
    [leased] = worker.dequeue()
    worker.complete(leased, ok=True, output="1")
    assert _trigger(client, "idem", 1, idempotencyKey=ikey) == again  # completed keeps it
    reset = client.post(f"/api/v1/idempotencyKeys/{ikey}/reset", json={"taskIdentifier": "idem"})
    assert reset.json()["runs"] == [again]
    assert _trigger(client, "idem", 1, idempotencyKey=ikey) != again
    short = uuid.uuid4().hex
    first = _trigger(client, "idem", 1, idempotencyKey=short, idempotencyKeyTTL="1s")
    time.sleep(1.2)
    assert _trigger(client, "idem", 1, idempotencyKey=short) != first  # TTL over


def test_batch_idempotency_key_applies_per_item(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["bi"])
    body = {"items": [{"payload": i} for i in range(3)], "options": {"idempotencyKey": "bk"}}
    first = client.post("/api/v1/tasks/bi/batch", json=body).json()["runs"]
    second = client.post("/api/v1/tasks/bi/batch", json=body).json()["runs"]
    assert [r["id"] for r in first] == [r["id"] for r in second]
    assert all(r["isCached"] for r in second)


def test_debounce_pushes_one_delayed_run(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["deb"])
    ids = {
        _trigger(client, "deb", i, debounce={"key": "user-1", "delay": "10s", "mode": "trailing"})
        for i in range(4)
    }
    assert len(ids) == 1
    run = client.get(f"/api/v3/runs/{ids.pop()}").json()
    assert run["status"] == "DELAYED" and run["payload"] == 3  # trailing: the last payload
    other = _trigger(client, "deb", 9, debounce={"key": "user-2", "delay": "10s"})
    assert client.get(f"/api/v3/runs/{other}").json()["payload"] == 9
    bad = client.post(
        "/api/v1/tasks/deb/trigger", json={"options": {"debounce": {"key": "k", "delay": "10ms"}}}
    )
    assert bad.status_code == 422
    # a bad maxDelay is refused at the door too, naming the field (not a failure at insert)
    bad = client.post(
        "/api/v1/tasks/deb/trigger",
        json={"options": {"debounce": {"key": "k", "delay": "10s", "maxDelay": "soon"}}},
    )
    assert bad.status_code == 422 and "options.debounce.maxDelay" in bad.json()["error"]


def test_pending_version_until_a_worker_registers(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    early = ProtocolWorker(api_server.url, key, ["later"])
    with psycopg.connect(api_server.database_url) as conn:  # that worker went away long ago
        conn.execute(
            "UPDATE workers SET last_seen_at = now() - interval '1 hour' WHERE instance_id = %s",
            (early.instance_id,),
        )
    waiting = _trigger(client, "later", 1)
    assert _status(client, waiting) == "PENDING_VERSION"
    unknown_queue = _trigger(client, "later", 2, queue="not-declared")
    assert _status(client, unknown_queue) == "PENDING_VERSION"
    fresh = ProtocolWorker(api_server.url, key, ["later"], queue={"name": "not-declared"})
    assert _status(client, waiting) == "QUEUED"
    assert _status(client, unknown_queue) == "QUEUED"
    assert {r["run_id"] for r in fresh.dequeue(max_runs=5)} == {waiting, unknown_queue}


def test_version_pin_and_replay(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    old = ProtocolWorker(api_server.url, key, ["v"])
    old_version = client.get("/api/v1/runs").json()  # noqa: F841 (warms the key cache)
    new = ProtocolWorker(api_server.url, key, ["v"])
    with psycopg.connect(api_server.database_url) as conn:
        (old_name,) = conn.execute(
            "SELECT version FROM worker_versions WHERE id = %s", (old.version_id,)
        ).fetchone()  # type: ignore[misc]
    pinned = _trigger(client, "v", {"a": 1}, tags=["t1"], lockToVersion=old_name)
    assert new.dequeue() == []  # pinned to the old version: the new worker does not take it
    [leased] = old.dequeue()
    assert leased["version"] == old_name
    old.complete(leased, ok=True, output='"done"')
    replayed = client.post(f"/api/v1/runs/{pinned}/replay").json()["id"]
    run = client.get(f"/api/v3/runs/{replayed}").json()
    assert run["payload"] == {"a": 1} and run["tags"] == ["t1"]
    [again] = new.dequeue()  # the replay runs on the newest version
    assert again["run_id"] == replayed and again["version_id"] == new.version_id
    missing = client.post("/api/v1/tasks/v/trigger", json={"options": {"lockToVersion": "1.0"}})
    assert missing.status_code == 404


def test_cancel_cascades_to_children(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["tree"])
    parent = _trigger(client, "tree", 0)
    child = _trigger(client, "tree", 1, parentRunId=parent)
    grandchild = _trigger(client, "tree", 2, parentRunId=child)
    done = client.post(f"/api/v2/runs/{parent}/cancel").json()["canceled"]
    assert set(done) == {parent, child, grandchild}
    assert {_status(client, r) for r in (parent, child, grandchild)} == {"CANCELED"}


def test_list_filters(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["lf1"], queue={"name": "lq"})
    ProtocolWorker(api_server.url, key, ["lf2"])
    a = _trigger(client, "lf1", 1)
    b = _trigger(client, "lf2", 2)
    by_queue = client.get("/api/v1/runs", params={"filter[queue]": "lq"}).json()["data"]
    assert [r["id"] for r in by_queue] == [a]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        client.get("/api/v1/runs", params={"filter[createdAt][from]": future}).json()["data"] == []
    )
    recent = client.get("/api/v1/runs", params={"filter[createdAt][period]": "1h"}).json()["data"]
    assert {r["id"] for r in recent} == {a, b}
    bad = client.get("/api/v1/runs", params={"filter[createdAt][from]": "yesterday"})
    assert bad.status_code == 400


def test_large_payload_is_kept_out_of_the_runs_table(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["big"])
    payload = {"blob": "x" * 200_000}
    run_id = _trigger(client, "big", payload)
    with psycopg.connect(api_server.database_url) as conn:
        (inline,) = conn.execute("SELECT payload FROM runs WHERE id = %s", (run_id,)).fetchone()  # type: ignore[misc]
    assert inline is None
    assert client.get(f"/api/v3/runs/{run_id}").json()["payload"] == payload
    [leased] = worker.dequeue()
    assert len(leased["payload"]) > 200_000
