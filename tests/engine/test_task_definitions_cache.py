"""Task definitions cached per API process (engine/task_defs.py): a plain trigger costs one
round trip, and a definition registered or promoted is seen by the very next trigger in every
process. Two real API processes on one database, a protocol-level worker over HTTP."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ApiServer, start_api, stop_process
from tests.protocol_worker import ProtocolWorker

NEEDS_A = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
NEEDS_B = {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}


@pytest.fixture
def second_api(api_server: ApiServer, tmp_path: Path) -> Iterator[ApiServer]:
    """Another API process on the session's database."""
    server = start_api(api_server.database_url, tmp_path / "api2.log")
    yield server
    stop_process(server.process)


def _client(server: ApiServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {key}"},
                        timeout=30)


def _register(server: ApiServer, key: str, task: str, **options: Any) -> ProtocolWorker:
    return ProtocolWorker(server.url, key, [task], **options)


def _run(database_url: str, run_id: str) -> tuple[Any, ...]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT status, queue, expires_at IS NOT NULL FROM runs WHERE id = %s",
                           (run_id,)).fetchone()
    assert row is not None
    return tuple(row)


def test_a_new_deploy_is_seen_at_once_by_another_api_process(
    api_server: ApiServer, second_api: ApiServer, project_keys: dict[str, str]
) -> None:
    key, task = project_keys["dev"], f"defs-{uuid.uuid4().hex[:6]}"
    first = _client(api_server, key)
    _register(api_server, key, task, payload_schema=NEEDS_A)
    for i in range(3):  # the first reads the definition, the next ones use the cached one
        reply = first.post(f"/api/v1/tasks/{task}/trigger", json={"payload": {"a": i}})
        assert reply.status_code == 200, reply.text
        assert _run(api_server.database_url, reply.json()["id"])[:2] == ("PENDING",
                                                                          f"task/{task}")
    # a new version of the task, registered through the other process: another schema, its
    # own queue and a TTL
    _register(second_api, key, task, payload_schema=NEEDS_B, ttl="1h",
              queue={"name": "moved-q"})
    refused = first.post(f"/api/v1/tasks/{task}/trigger", json={"payload": {"a": 1}})
    assert refused.status_code == 422, refused.text
    reply = first.post(f"/api/v1/tasks/{task}/trigger", json={"payload": {"b": "x"}})
    assert reply.status_code == 200, reply.text
    assert _run(api_server.database_url, reply.json()["id"]) == ("PENDING", "moved-q", True)


def test_a_changed_definition_is_seen_even_before_its_notification(
    api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    """The insert checks the cached definition is still the current one (the row's xmin):
    here the row changes with no notification at all, and the next trigger still sees it."""
    key, task = project_keys["dev"], f"silent-{uuid.uuid4().hex[:6]}"
    client = _client(api_server, key)
    _register(api_server, key, task, payload_schema=NEEDS_A)
    for i in range(2):
        reply = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": {"a": i}})
        assert reply.status_code == 200, reply.text
    with psycopg.connect(api_server.database_url) as conn:
        conn.execute("SET session_replication_role = replica")  # no trigger: no NOTIFY
        changed = conn.execute(
            "UPDATE tasks SET definition = jsonb_set(definition, '{payload_schema}', %s) "
            "WHERE task_id = %s RETURNING 1", (psycopg.types.json.Jsonb(NEEDS_B), task))
        assert changed.fetchone() is not None
    for _ in range(2):  # the stale entry is dropped, the definition read again
        refused = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": {"a": 1}})
        assert refused.status_code == 422, refused.text
    assert client.post(f"/api/v1/tasks/{task}/trigger",
                       json={"payload": {"b": "y"}}).status_code == 200


def test_a_cached_trigger_waits_for_a_worker_when_none_is_live(
    api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    """Liveness is read by the insert itself: a worker that stopped makes the next cached
    trigger PENDING_VERSION, one that registers again makes it PENDING."""
    key, task = project_keys["dev"], f"live-{uuid.uuid4().hex[:6]}"
    client = _client(api_server, key)
    worker = _register(api_server, key, task)
    first = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 1}).json()["id"]
    assert _run(api_server.database_url, first)[0] == "PENDING"
    worker.post("/engine/v1/worker/heartbeat",
                {"instance_id": worker.instance_id, "run_ids": [], "stopping": True})
    waiting = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 2}).json()["id"]
    assert _run(api_server.database_url, waiting)[0] == "PENDING_VERSION"
    _register(api_server, key, task)  # a worker with the task is back
    assert _run(api_server.database_url, waiting)[0] == "PENDING"
    again = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 3}).json()["id"]
    assert _run(api_server.database_url, again)[0] == "PENDING"
