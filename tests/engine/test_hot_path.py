"""The hot path's shortcuts keep the protocol's rules (issue 16), through the real API:
complete-and-lease-next on ``/complete``, and environment variables cached per API process
yet changed everywhere as soon as they change (two API processes on one database)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServer, start_api, stop_process
from tests.protocol_worker import ProtocolWorker


def _trigger(client: httpx.Client, task: str, payload: object = None) -> str:
    reply = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": payload})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def _complete(worker: ProtocolWorker, runs: list[dict[str, Any]],
              lease: dict[str, Any] | None = None, **result: Any) -> httpx.Response:
    body: dict[str, Any] = {"instance_id": worker.instance_id, "completions": [
        {"run_id": r["run_id"], "attempt_number": r["attempt_number"], **result}
        for r in runs]}
    if lease is not None:
        body["lease"] = lease
    return worker.http.post("/engine/v1/worker/complete", json=body)


def test_complete_with_a_lease_leases_the_next_runs_within_the_limits(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["lim"],
                            queue={"name": "lim-q", "concurrency_limit": 2})
    ids = [_trigger(client, "lim", i) for i in range(4)]
    first = worker.dequeue(max_runs=10)
    assert [r["run_id"] for r in first] == ids[:2]  # the limit: two at a time

    # one finished, asking for up to 5 more: the limit still allows only one
    reply = _complete(worker, first[:1], {"versions": [worker.version_id], "max_runs": 5},
                      ok=True, output="1")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert [r["outcome"] for r in body["results"]] == ["RUN_FINISHED"]
    assert [r["run_id"] for r in body["runs"]] == [ids[2]]
    leased = body["runs"][0]
    assert leased["attempt_number"] == 1 and leased["task_id"] == "lim"
    assert leased["ctx"]["worker"]["instance_id"] == worker.instance_id
    assert client.get(f"/api/v3/runs/{ids[0]}").json()["status"] == "COMPLETED"
    assert client.get(f"/api/v3/runs/{ids[2]}").json()["status"] == "EXECUTING"

    # no lease asked: exactly the old reply
    plain = _complete(worker, [leased], ok=True, output="2").json()
    assert set(plain) == {"results"}
    assert plain["results"][0]["outcome"] == "RUN_FINISHED"
    worker.close()


def test_complete_with_a_lease_is_fenced_and_never_waits(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["fen"])
    other = ProtocolWorker(api_server.url, key, [])
    other.version_id = worker.version_id
    run_id = _trigger(client, "fen")
    [run] = worker.dequeue()

    # another instance cannot complete it, and gets no runs when there are none (no long poll)
    stranger = _complete(other, [run], {"versions": [other.version_id]}, ok=True, output="1")
    assert stranger.status_code == 200, stranger.text
    assert stranger.json()["results"][0]["outcome"] == "LEASE_LOST"
    assert stranger.json()["runs"] == []
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "EXECUTING"

    # a lease naming a version of no environment of this key: refused, nothing recorded
    unknown = _complete(worker, [run], {"versions": [str(uuid.uuid4())]}, ok=True, output="1")
    assert unknown.status_code == 400, unknown.text
    assert "not registered" in unknown.json()["error"]
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "EXECUTING"

    for bad in ({"versions": []}, {"versions": [worker.version_id], "max_runs": 0},
                {"versions": [worker.version_id], "max_runs": 101}, {"max_runs": 1}):
        refused = _complete(worker, [run], bad, ok=True, output="1")
        assert refused.status_code == 422, (bad, refused.text)
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "EXECUTING"

    done = _complete(worker, [run], {"versions": [worker.version_id], "max_runs": 3},
                     ok=True, output="1")
    assert done.json()["results"][0]["outcome"] == "RUN_FINISHED"
    assert done.json()["runs"] == []
    worker.close()
    other.close()


def test_a_failure_with_a_lease_is_recorded_and_the_next_run_leased(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    """Not a plain success (the path item by item): the same reply, the lease after it."""
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["boom"], retry={"maxAttempts": 1})
    first, second = _trigger(client, "boom", 1), _trigger(client, "boom", 2)
    [run] = worker.dequeue()
    error = {"type": "BUILT_IN_ERROR", "name": "Error", "message": "no"}
    reply = _complete(worker, [run], {"versions": [worker.version_id], "max_runs": 2},
                      ok=False, error=error, skipped_retrying=True)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["results"][0]["run_id"] == first
    assert body["results"][0]["outcome"] == "RUN_FINISHED"
    assert [r["run_id"] for r in body["runs"]] == [second]
    assert client.get(f"/api/v3/runs/{first}").json()["status"] == "FAILED"
    worker.close()


@pytest.fixture
def second_api(api_server: ApiServer, tmp_path: Path) -> Iterator[ApiServer]:
    """Another API process on the same database (a replica behind a load balancer)."""
    server = start_api(api_server.database_url, tmp_path / "replica.log")
    yield server
    stop_process(server.process)


def _vars_of_next_run(client: httpx.Client, worker: ProtocolWorker, task: str
                      ) -> dict[str, str]:
    _trigger(client, task)
    [run] = worker.dequeue()
    reply = _complete(worker, [run], ok=True, output="1")
    assert reply.json()["results"][0]["outcome"] == "RUN_FINISHED"
    return dict(run.get("env_vars") or {})


def _eventually(read: Any, expected: dict[str, str]) -> None:
    """The change reaches the other process (a notification away); no timing asserted."""
    deadline = time.monotonic() + 20
    seen = read()
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = read()
    assert seen == expected


def test_variable_changes_reach_every_api_process(
    env: tuple[httpx.Client, str], api_server: ApiServer, second_api: ApiServer,
    project_keys: dict[str, str],
) -> None:
    client, key = env
    project = client.get("/api/v1/whoami").json()["project"]["ref"]
    base = f"/api/v1/projects/{project}/envvars/dev"
    other_client = httpx.Client(base_url=second_api.url, headers=client.headers, timeout=30)
    # the worker talks to the replica; the variables are managed through the first process
    worker = ProtocolWorker(second_api.url, key, ["vars"])

    def on_replica() -> dict[str, str]:
        return _vars_of_next_run(client, worker, "vars")

    assert on_replica() == {}
    assert client.post(base, json={"name": "GREETING", "value": "hi"}).status_code == 200
    _eventually(on_replica, {"GREETING": "hi"})
    assert on_replica() == {"GREETING": "hi"}  # served from the replica's cache now

    assert client.put(f"{base}/GREETING", json={"value": "hello"}).status_code == 200
    _eventually(on_replica, {"GREETING": "hello"})
    imported = client.post(f"{base}/import", json={"variables": {"A": "1", "B": "2"},
                                                   "override": True})
    assert imported.status_code == 200, imported.text
    _eventually(on_replica, {"GREETING": "hello", "A": "1", "B": "2"})
    assert client.delete(f"{base}/A").status_code == 200
    _eventually(on_replica, {"GREETING": "hello", "B": "2"})

    # and the other way round: a change made through the replica reaches the first process
    first = ProtocolWorker(api_server.url, key, ["vars"])
    assert _vars_of_next_run(client, first, "vars") == {"GREETING": "hello", "B": "2"}
    assert other_client.delete(f"{base}/B").status_code == 200
    _eventually(lambda: _vars_of_next_run(client, first, "vars"), {"GREETING": "hello"})
    for w in (worker, first):
        w.close()
    other_client.close()


def test_every_query_is_short_enough_for_psycopg_to_cache_its_conversion() -> None:
    """psycopg converts %(name)s placeholders on every execute of a text over 4 KiB (its
    cache's limit); the queries are sent without their whole-line comments to stay under."""
    from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

    from worker.engine.queries import _load

    long = {name: len(text.encode()) for name, text in _load().items()
            if len(text.encode()) > MAX_CACHED_STATEMENT_LENGTH}
    assert not long
    assert all("\n--" not in text and not text.startswith("--") for text in _load().values())
