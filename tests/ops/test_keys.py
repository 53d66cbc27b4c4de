"""Keys and credentials (issue 17): API keys created, listed, revoked and rotated through the
API; revocation seen by another API replica at once; worker tokens limited to the worker
protocol; public-token signing secret rotation; failed-auth throttling; stream caps.
Real API processes on a real Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, ApiServer, start_api, stop_process
from tests.ops.conftest import Project
from tests.protocol_worker import ProtocolWorker


def _h(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _wait_refused(url: str, key: str, deadline_s: float = 5.0) -> float:
    """Seconds until ``key`` is refused (401) by the API at ``url``."""
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        if httpx.get(f"{url}/api/v1/keys", headers=_h(key)).status_code == 401:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"key still accepted by {url} after {deadline_s} s")


def test_create_list_revoke_seen_by_every_replica(
    api_server: ApiServer, replica: ApiServer, project: Project
) -> None:
    admin = _h(project.keys["dev"])
    created = httpx.post(f"{api_server.url}/api/v1/keys", headers=admin,
                         json={"name": "ci", "type": "secret"})
    assert created.status_code == 201, created.text
    new = created.json()
    assert new["key"].startswith("tr_dev_") and new["prefix"] == new["key"][:11]
    assert new["status"] == "active" and new["lastUsedAt"] is None

    # both replicas accept it (and now hold it in their caches)
    for server in (api_server, replica):
        assert httpx.get(f"{server.url}/api/v1/keys", headers=_h(new["key"])).status_code == 200
    listed = httpx.get(f"{api_server.url}/api/v1/keys", headers=admin).json()["data"]
    mine = next(k for k in listed if k["id"] == new["id"])
    assert "key" not in mine and mine["name"] == "ci" and mine["lastUsedAt"] is not None
    assert all("key" not in k for k in listed)

    revoked = httpx.delete(f"{api_server.url}/api/v1/keys/{new['id']}", headers=admin)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    # the other replica cached the key for 30 s; the revocation notification drops it at once
    took = _wait_refused(replica.url, new["key"])
    print(f"revoked key refused by the other replica after {took * 1000:.0f} ms")
    assert httpx.get(f"{api_server.url}/api/v1/keys", headers=_h(new["key"])).status_code == 401
    again = httpx.delete(f"{api_server.url}/api/v1/keys/{new['id']}", headers=admin)
    assert again.status_code == 409
    assert httpx.delete(f"{api_server.url}/api/v1/keys/{uuid.uuid4()}",
                        headers=admin).status_code == 404
    assert "revoked" in {k["status"] for k in httpx.get(
        f"{api_server.url}/api/v1/keys?includeRevoked=true", headers=admin).json()["data"]}


def test_the_last_secret_key_cannot_be_revoked(api_server: ApiServer, project: Project) -> None:
    admin = _h(project.keys["dev"])
    (only,) = httpx.get(f"{api_server.url}/api/v1/keys", headers=admin).json()["data"]
    answer = httpx.delete(f"{api_server.url}/api/v1/keys/{only['id']}", headers=admin)
    assert answer.status_code == 409 and "last live secret key" in answer.json()["error"]


def test_rotation_keeps_the_old_key_for_its_grace_period(
    api_server: ApiServer, replica: ApiServer, project: Project
) -> None:
    old_key = project.keys["dev"]
    (old,) = httpx.get(f"{api_server.url}/api/v1/keys", headers=_h(old_key)).json()["data"]
    rotated = httpx.post(f"{api_server.url}/api/v1/keys/{old['id']}/rotate",
                         headers=_h(old_key), json={"gracePeriod": "1h"})
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["previous"]["status"] == "expiring" and body["previous"]["expiresAt"]
    for key in (old_key, body["key"]):  # both work during the grace period, on both replicas
        for server in (api_server, replica):
            assert httpx.get(f"{server.url}/api/v1/keys", headers=_h(key)).status_code == 200
    # rotating the new key with no grace: it stops at once, everywhere
    newer = httpx.post(f"{replica.url}/api/v1/keys/{body['id']}/rotate",
                       headers=_h(body["key"]), json={"gracePeriod": 0})
    assert newer.status_code == 201
    _wait_refused(api_server.url, body["key"])
    _wait_refused(replica.url, body["key"])
    bad = httpx.post(f"{api_server.url}/api/v1/keys/{old['id']}/rotate",
                     headers=_h(newer.json()["key"]), json={"gracePeriod": "forever"})
    assert bad.status_code == 400 and "gracePeriod" in bad.json()["error"]


def test_worker_tokens_open_the_worker_protocol_only(
    api_server: ApiServer, project: Project
) -> None:
    made = httpx.post(f"{api_server.url}/api/v1/keys", headers=_h(project.keys["prod"]),
                      json={"name": "fleet", "type": "worker"})
    assert made.status_code == 201
    token = made.json()["key"]
    assert token.startswith("tr_wkr_")

    worker = ProtocolWorker(api_server.url, token, ["w"])  # register
    trigger = httpx.post(f"{api_server.url}/api/v1/tasks/w/trigger",
                         headers=_h(project.keys["prod"]), json={"payload": {"n": 1}})
    assert trigger.status_code == 200, trigger.text
    (run,) = worker.dequeue(wait_ms=2000)
    worker.heartbeat([run["run_id"]])
    worker.post("/engine/v1/worker/logs", {"logs": [{"run_id": run["run_id"], "message": "x"}]})
    assert worker.complete(run, ok=True, output={"done": True})

    # it cannot trigger, read runs or manage keys
    for method, path in (("POST", "/api/v1/tasks/w/trigger"), ("GET", "/api/v1/runs"),
                         ("GET", f"/api/v3/runs/{run['run_id']}"), ("GET", "/api/v1/keys")):
        answer = httpx.request(method, api_server.url + path, headers=_h(token), json={})
        assert answer.status_code == 403, (path, answer.text)
        assert "worker token" in answer.json()["error"]

    # production: the secret key no longer opens the worker protocol; development still does
    refused = httpx.post(f"{api_server.url}/engine/v1/worker/register",
                         headers=_h(project.keys["prod"]),
                         json={"instance_id": str(uuid.uuid4()), "content_hash": "h",
                               "tasks": []})
    assert refused.status_code == 403 and "TRIGGER_WORKER_TOKEN" in refused.json()["error"]
    ProtocolWorker(api_server.url, project.keys["dev"], ["d"])


def test_signing_secret_rotation_keeps_issued_tokens_valid(
    api_server: ApiServer, replica: ApiServer, project: Project
) -> None:
    admin = _h(project.keys["dev"])

    def token() -> str:
        made = httpx.post(f"{api_server.url}/api/v1/auth/public-tokens", headers=admin,
                          json={"scopes": ["read:runs"], "expirationTime": "1h"})
        assert made.status_code == 200, made.text
        return str(made.json()["token"])

    def reads(server: ApiServer, jwt: str) -> int:
        return httpx.get(f"{server.url}/api/v1/auth/jwt/claims", headers=_h(jwt)).status_code

    before = token()
    assert reads(replica, before) == 200  # the replica caches the current secret
    rotated = httpx.post(f"{replica.url}/api/v1/keys/signing-secret/rotate", headers=admin)
    assert rotated.status_code == 200 and rotated.json()["previousValidUntil"]
    after = token()
    assert after.split(".")[2] != before.split(".")[2]
    for server in (api_server, replica):
        assert reads(server, before) == 200  # signed with the previous secret: still valid
        deadline = time.monotonic() + 5  # the new secret reaches the other replica's cache
        while reads(server, after) != 200:
            assert time.monotonic() < deadline, "token signed with the new secret refused"
            time.sleep(0.05)
    # two rotations later, the first secret is gone
    for _ in range(2):
        httpx.post(f"{api_server.url}/api/v1/keys/signing-secret/rotate", headers=admin)
    deadline = time.monotonic() + 5
    while reads(replica, before) != 401:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_stream_and_long_poll_caps_answer_429(replica: ApiServer, project: Project) -> None:
    admin = _h(project.keys["dev"])
    with httpx.Client(base_url=replica.url, headers=admin, timeout=10) as http:
        url = "/realtime/v1/runs?tags=nothing"
        with http.stream("GET", url) as one, http.stream("GET", url) as two:
            assert one.status_code == two.status_code == 200
            third = http.get(url)
            assert third.status_code == 429 and "TRIGGER_MAX_SSE_PER_ENV" in third.json()["error"]
            assert third.headers["retry-after"]
        deadline = time.monotonic() + 5  # closed streams free their places
        while True:
            with http.stream("GET", url) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)

    worker = ProtocolWorker(replica.url, project.keys["dev"], ["lp"])
    import threading

    held = threading.Thread(target=worker.dequeue, kwargs={"wait_ms": 3000})
    held.start()
    time.sleep(0.5)
    try:
        second = ProtocolWorker(replica.url, project.keys["dev"], ["lp"])
        answer = second.http.post("/engine/v1/worker/dequeue", json={
            "instance_id": second.instance_id, "versions": [second.version_id],
            "wait_ms": 1000})
        assert answer.status_code == 429, answer.text
        assert "TRIGGER_MAX_LONG_POLLS_PER_ENV" in answer.json()["error"]
        # a client waiting for a run's result (GET …?waitMs) counts against the same cap
        delayed = second.http.post("/api/v1/tasks/lp/trigger",
                                   json={"payload": {}, "options": {"delay": "1h"}})
        assert delayed.status_code == 200, delayed.text
        waiting = second.http.get(f"/api/v3/runs/{delayed.json()['id']}",
                                  params={"waitMs": "1000"})
        assert waiting.status_code == 429, waiting.text
        assert "TRIGGER_MAX_LONG_POLLS_PER_ENV" in waiting.json()["error"]
    finally:
        held.join()


def test_failed_authentications_are_throttled_per_address(
    api_server: ApiServer, project: Project, tmp_path: Path
) -> None:
    server = start_api(api_server.database_url, tmp_path / "api.log",
                       TRIGGER_AUTH_FAILURES_PER_MINUTE="5")
    try:
        good = _h(project.keys["dev"])
        assert httpx.get(f"{server.url}/api/v1/keys", headers=good).status_code == 200
        codes = [httpx.get(f"{server.url}/api/v1/keys",
                           headers=_h(f"tr_dev_wrong{i:020d}")).status_code for i in range(7)]
        assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]
        throttled = httpx.get(f"{server.url}/api/v1/keys", headers=_h("tr_dev_" + "x" * 24))
        assert int(throttled.headers["retry-after"]) > 0
        assert "too many failed authentications" in throttled.json()["error"]
        # a key this process already verified keeps working from the throttled address
        assert httpx.get(f"{server.url}/api/v1/keys", headers=good).status_code == 200
    finally:
        stop_process(server.process)


def test_cli_registers_a_worker_token_idempotently_and_lists_keys(
    api_server: ApiServer, project: Project
) -> None:
    token = "tr_wkr_" + uuid.uuid4().hex
    env = {**os.environ, "DATABASE_URL": api_server.database_url,
           "TRIGGER_API_URL": api_server.url, "TRIGGER_SECRET_KEY": project.keys["prod"],
           "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker.cli", "keys", *args], env=env,
                              capture_output=True, text=True, timeout=60)

    for _ in range(2):  # a restart registers the same token again: no error, no duplicate
        done = cli("create", "--type", "worker", "--name", "fleet", "--key", token,
                   "--project", project.ref, "--env", "prod")
        assert done.returncode == 0, done.stderr
        assert token not in done.stdout  # a given key is never echoed
    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count(token[:11]) == 1 and "fleet" in listed.stdout
    ProtocolWorker(api_server.url, token, ["cli"])
    made = cli("create", "--name", "ops")
    assert made.returncode == 0 and "tr_prod_" in made.stdout
    bad = cli("create", "--type", "worker", "--key", "nope", "--project", project.ref,
              "--env", "prod")
    assert bad.returncode != 0 and "worker token must look like" in bad.stderr


@pytest.fixture(autouse=True)
def _no_leftover_env() -> None:
    os.environ.pop("TRIGGER_WORKER_TOKEN", None)
