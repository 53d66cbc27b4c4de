"""The protocols Trigger.dev's SDK speaks, checked over raw HTTP against a real API (fast; the
SDK itself drives them in test_sdk_conformance.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker
from worker.engine import public_tokens


def _trigger(client: httpx.Client, task: str, **options: Any) -> str:
    reply = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 1, "options": options})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def _shape(client: httpx.Client, path: str, **params: str) -> httpx.Response:
    reply = client.get(path, params=params, timeout=40)
    assert reply.status_code in (200, 409), reply.text
    return reply


def test_shape_protocol_sends_each_status_of_a_run_in_its_own_response(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["shape"])
    run_id = _trigger(client, "shape", tags=["t-shape"])
    path = f"/realtime/v1/runs/{run_id}"
    first = _shape(client, path, offset="-1")
    handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
    assert "electric-schema" in first.headers and "electric-up-to-date" in first.headers
    [insert, up_to_date] = first.json()
    assert insert["headers"]["operation"] == "insert" and insert["value"]["status"] == "PENDING"
    assert insert["value"]["friendlyId"] == run_id and insert["value"]["runTags"] == '{"t-shape"}'
    assert up_to_date == {"headers": {"control": "up-to-date"}}
    [leased] = worker.dequeue()
    worker.complete(leased, ok=True, output='{"done":true}')
    statuses = []
    while "COMPLETED_SUCCESSFULLY" not in statuses:
        reply = _shape(client, path, live="true", handle=handle, offset=offset, cursor="x")
        assert "electric-cursor" in reply.headers
        messages = reply.json()
        changes = [m for m in messages if "key" in m]
        assert len(changes) <= 1  # the SDK would only show the last change of a run
        statuses += [m["value"]["status"] for m in changes]
        offset = reply.headers["electric-offset"]
    assert statuses == ["EXECUTING", "COMPLETED_SUCCESSFULLY"]
    # a handle this server does not know: start over
    gone = _shape(client, path, live="true", handle="nope", offset=offset)
    assert gone.status_code == 409 and gone.json() == [{"headers": {"control": "must-refetch"}}]


def test_public_token_signed_with_the_secret_key_reads_its_run_only(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    """What ``auth.createPublicToken`` does in Trigger.dev's SDK: claims from the server, signed
    by the client with its secret key."""
    client, key = env
    ProtocolWorker(api_server.url, key, ["signed"])
    mine, other = _trigger(client, "signed"), _trigger(client, "signed")
    claims = client.post("/api/v1/auth/jwt/claims").json()
    assert claims["pub"] is True
    now = int(time.time())
    claims.update(scopes=[f"read:runs:{mine}"], iat=now, exp=now + 60,
                  iss=public_tokens.ISSUER, aud=public_tokens.AUDIENCE)

    def get(run_id: str, token: str) -> int:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.get(f"{api_server.url}/api/v3/runs/{run_id}", headers=headers).status_code

    token = public_tokens.encode(claims, key.encode())
    assert get(mine, token) == 200
    assert get(other, token) == 403
    assert get(mine, public_tokens.encode(claims, b"tr_dev_not-the-key-at-all-000")) == 401
    # the token a trigger returns reads that run too
    reply = client.post("/api/v1/tasks/signed/trigger", json={"payload": 2})
    assert get(reply.json()["id"], reply.headers["x-trigger-jwt"]) == 200


def test_two_phase_batch_deduplicates_items_and_reports_bad_ones(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["item"])
    created = client.post("/api/v3/batches", json={"runCount": 3, "idempotencyKey": "b-1"}).json()
    assert created["isCached"] is False and created["runCount"] == 3
    again = client.post("/api/v3/batches", json={"runCount": 3, "idempotencyKey": "b-1"}).json()
    assert again["id"] == created["id"] and again["isCached"] is True
    lines = [
        {"index": 0, "task": "item", "payload": '{"json":1}',
         "options": {"payloadType": "application/super+json", "payloadSize": 10}},
        {"index": 1, "task": "item", "payload": '{"json":2}',
         "options": {"payloadType": "application/super+json"}},
    ]
    body = b"\n".join(orjson.dumps(line) for line in lines)
    url = f"/api/v3/batches/{created['id']}/items"
    headers = {"content-type": "application/x-ndjson"}
    partial = client.post(url, content=body, headers=headers).json()
    assert partial["sealed"] is False and partial["enqueuedCount"] == 2
    missing = {"index": 2, "task": "no-such-task", "payload": "{}", "options": {}}
    body += b"\n" + orjson.dumps(missing)
    done = client.post(url, content=body, headers=headers).json()  # a resent whole stream
    assert done == {"id": created["id"], "itemsAccepted": 1, "itemsDeduplicated": 2,
                    "sealed": True}
    batch = client.get(f"/api/v2/batches/{created['id']}").json()
    assert batch["status"] == "PARTIAL_FAILED" and len(batch["runs"]) == 2
    [error] = batch["processing"]["errors"]
    assert error["index"] == 2 and "no-such-task" in error["error"]


def test_environment_variables_are_encrypted_and_ride_with_leased_runs(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["env-task"])
    claims = client.post("/api/v1/auth/jwt/claims").json()  # "sub": the key's environment
    project = _project_ref(api_server, claims["sub"])
    base = f"/api/v1/projects/{project}/envvars/dev"
    assert client.post(base, json={"name": "GREETING", "value": "hi"}).json() == {"success": True}
    assert client.post(base, json={"name": "TOKEN", "value": "s3cr3t", "isSecret": True}).is_success
    assert client.post(base, json={"name": "GREETING", "value": "again"}).status_code == 409
    listed = {v["name"]: v for v in client.get(base).json()}
    assert listed["GREETING"]["value"] == "hi" and listed["TOKEN"]["value"] == "<redacted>"
    assert client.get(f"/api/v1/projects/{project}/envvars/prod").status_code == 403
    with _db(api_server) as conn:
        stored = conn.execute(
            "SELECT value_ciphertext FROM environment_variables WHERE name = 'TOKEN'"
        ).fetchone()
    assert stored is not None and b"s3cr3t" not in bytes(stored[0])
    run_id = _trigger(client, "env-task")
    [leased] = worker.dequeue(max_runs=5)
    assert leased["run_id"] == run_id
    assert leased["env_vars"] == {"GREETING": "hi", "TOKEN": "s3cr3t"}


def _db(api_server: ApiServer) -> Any:
    import psycopg

    return psycopg.connect(api_server.database_url)


def _project_ref(api_server: ApiServer, environment_id: str) -> str:
    with _db(api_server) as conn:
        row = conn.execute(
            "SELECT p.ref FROM environments e JOIN projects p ON p.id = e.project_id "
            "WHERE e.id = %s",
            (environment_id,),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_run_environment_sets_variables_for_one_run_only(monkeypatch: Any) -> None:
    import os

    from worker.runtime.run_env import run_environment

    monkeypatch.setenv("KEPT", "worker's own")
    monkeypatch.delenv("ADDED", raising=False)
    with run_environment({"KEPT": "the run's", "ADDED": "1"}):
        assert os.environ["KEPT"] == "the run's" and os.environ["ADDED"] == "1"
    assert os.environ["KEPT"] == "worker's own" and "ADDED" not in os.environ
