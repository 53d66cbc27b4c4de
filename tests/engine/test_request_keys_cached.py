"""A trigger's request key (``x-trigger-request-idempotency-key``, sent by the SDKs with every
trigger) on the plain trigger's one round trip (engine/triggering.py ``_trigger_cached``): the
key is claimed in the insert's own statement. A retried request answers what its first try
answered and creates nothing; a key reused for another task is a conflict; a changed definition
neither loses the key nor the run. Real API process, real Postgres, a protocol-level worker."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.conftest import ApiServer
from tests.engine.test_handoff import LongPoll, _waiting
from tests.protocol_worker import ProtocolWorker


def _send(client: httpx.Client, task: str, key: str, payload: Any = 1) -> httpx.Response:
    return client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": payload},
                       headers={"x-trigger-request-idempotency-key": key})


def _runs_of(database_url: str, task: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return [tuple(r) for r in conn.execute(
            "SELECT id, status, payload FROM runs WHERE task_id = %s ORDER BY created_at",
            (task,))]


@pytest.fixture
def task(env: tuple[httpx.Client, str], api_server: ApiServer) -> tuple[str, ProtocolWorker]:
    """A registered task whose definition the API process has cached (one keyless trigger)."""
    client, key = env
    name = f"rk-{uuid.uuid4().hex[:6]}"
    worker = ProtocolWorker(api_server.url, key, [name, f"{name}-other"])
    client.post(f"/api/v1/tasks/{name}/trigger", json={"payload": 0}).raise_for_status()
    [run] = worker.dequeue(wait_ms=2000)
    worker.complete(run, ok=True, output="0", output_type="application/json")
    return name, worker


def test_a_retried_request_answers_the_first_answer_and_creates_nothing(
    env: tuple[httpx.Client, str], api_server: ApiServer, task: tuple[str, ProtocolWorker]
) -> None:
    client, _ = env
    name, _worker = task
    key = uuid.uuid4().hex
    first = _send(client, name, key, {"n": 1})
    again = _send(client, name, key, {"n": 2})  # a retry (its body is not read again)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert again.json()["id"] == first.json()["id"]
    runs = _runs_of(api_server.database_url, name)
    assert [r[0] for r in runs[1:]] == [first.json()["id"]]
    assert runs[1][2] == '{"n":1}'
    # another task with the same key: a client bug, not a retry
    other = _send(client, f"{name}-other", key)
    assert other.status_code == 409 and "already used" in other.json()["error"]
    assert _runs_of(api_server.database_url, f"{name}-other") == []


def test_concurrent_tries_of_one_request_make_one_run(
    env: tuple[httpx.Client, str], api_server: ApiServer, task: tuple[str, ProtocolWorker]
) -> None:
    client, _ = env
    name, _worker = task
    key = uuid.uuid4().hex
    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: _send(client, name, key).json()["id"], range(16)))
    assert len(ids) == 1
    assert [r[0] for r in _runs_of(api_server.database_url, name)[1:]] == list(ids)


def test_a_handed_off_run_is_not_handed_twice(
    env: tuple[httpx.Client, str], api_server: ApiServer, task: tuple[str, ProtocolWorker]
) -> None:
    client, _ = env
    name, worker = task
    key = uuid.uuid4().hex
    poll = LongPoll(worker)
    _waiting(poll)
    first = _send(client, name, key).json()["id"]
    poll.join(timeout=8)
    assert poll.runs is not None and [r["run_id"] for r in poll.runs] == [first]
    second = LongPoll(worker, wait_ms=1500)
    _waiting(second)
    assert _send(client, name, key).json()["id"] == first  # the retry leases nothing
    second.join(timeout=8)
    assert second.runs == []
    assert [r[:2] for r in _runs_of(api_server.database_url, name)[1:]] == [
        (first, "EXECUTING")]


def test_a_changed_definition_keeps_the_key_and_the_run(
    env: tuple[httpx.Client, str], api_server: ApiServer, task: tuple[str, ProtocolWorker]
) -> None:
    """The cached definition is stale (changed with no notification): the one-statement insert
    claims nothing, the trigger reads the definition again and claims the key itself."""
    client, _ = env
    name, _worker = task
    with psycopg.connect(api_server.database_url) as conn:
        conn.execute("SET session_replication_role = replica")  # no trigger: no NOTIFY
        changed = conn.execute(
            "UPDATE tasks SET definition = jsonb_set(definition, '{max_duration}', %s) "
            "WHERE task_id = %s RETURNING 1", (Jsonb(120), name))
        assert changed.fetchone() is not None
    key = uuid.uuid4().hex
    first = _send(client, name, key)
    assert first.status_code == 200, first.text
    assert _send(client, name, key).json()["id"] == first.json()["id"]
    with psycopg.connect(api_server.database_url) as conn:
        row = conn.execute("SELECT response->>'id' FROM request_keys WHERE request_key = %s",
                           (key,)).fetchone()
    assert row == (first.json()["id"],)
    assert [r[0] for r in _runs_of(api_server.database_url, name)[1:]] == [first.json()["id"]]


def test_a_bad_request_key_is_a_clear_4xx_and_creates_nothing(
    env: tuple[httpx.Client, str], api_server: ApiServer, task: tuple[str, ProtocolWorker]
) -> None:
    client, _ = env
    name, _worker = task
    refused = _send(client, name, "k" * 5000)
    assert 400 <= refused.status_code < 500, refused.text
    assert "x-trigger-request-idempotency-key" in refused.json()["error"]
    assert len(_runs_of(api_server.database_url, name)) == 1  # the fixture's run only
    assert _send(client, name, uuid.uuid4().hex).status_code == 200
