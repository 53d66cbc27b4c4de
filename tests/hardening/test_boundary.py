"""Every class of input that answered 500 in issue 10 now answers a clear 4xx, and the weak
spots it lists are closed: real API process, real Postgres."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ROOT, ApiServer, free_port, stop_process
from tests.hardening.conftest import assert_clear_4xx, protocol_worker, trigger

Db = psycopg.Connection[dict[str, Any]]
NUL = "\u0000"


@pytest.fixture
def task(client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]) -> str:
    protocol_worker(api_server, project_keys["dev"], "t")
    return "t"


def _trigger(client: httpx.Client, options: dict[str, Any], payload: Any = 1) -> httpx.Response:
    return client.post("/api/v1/tasks/t/trigger", json={"payload": payload, "options": options})


@pytest.mark.parametrize(
    "options",
    [
        {"tags": [f"a{NUL}b"]},
        {"idempotencyKey": f"k{NUL}"},
        {"metadata": {"v": f"x{NUL}"}},
        {"metadata": {f"k{NUL}": 1}},
        {"concurrencyKey": f"c{NUL}"},
        {"queue": f"q{NUL}"},
        {"delay": "99999999999w"},
        {"delay": 1e20},
        {"ttl": "99999999999w"},
        {"ttl": 1e20},
        {"idempotencyKey": "k", "idempotencyKeyTTL": "99999999999w"},
        {"priority": 1e20},
        {"priority": 1e308},
        {"queue": {"name": ["a"]}},
        {"machine": "galaxy-brain-99x"},
        {"concurrencyKey": "k" * 1_000_000},
        {"maxDuration": 1e300},
    ],
    ids=lambda o: next(iter(o)) + ":" + repr(next(iter(o.values())))[:24],
)
def test_bad_trigger_options_answer_a_clear_4xx(
    client: httpx.Client, task: str, options: dict[str, Any]
) -> None:
    assert_clear_4xx(_trigger(client, options), 400, 413, 422)
    items = [{"payload": 1, "options": options}]
    batch = client.post("/api/v1/tasks/t/batch", json={"items": items})
    assert_clear_4xx(batch, 400, 413, 422)


def test_nul_in_urls_and_text_payloads(client: httpx.Client, task: str) -> None:
    for path in (
        "/api/v1/tasks/t%00x/trigger",
        "/api/v3/runs/run_%00",
        "/api/v1/runs?filter[tag]=%00",
        "/api/v1/idempotencyKeys/k%00/reset",
    ):
        method = "GET" if "runs" in path else "POST"
        assert_clear_4xx(client.request(method, path, json={"taskIdentifier": "t"}), 400)
    text = {"payload": f"a{NUL}b", "payloadType": "application/super+json"}
    assert_clear_4xx(client.post("/api/v1/tasks/t/trigger", json=text), 400)
    reset = client.post("/api/v1/idempotencyKeys/k/reset", json={"taskIdentifier": f"t{NUL}"})
    assert reset.status_code < 500


def test_overflowing_numbers_and_durations(client: httpx.Client, task: str) -> None:
    run_id = trigger(client, "t")
    for delay in ("99999999999w", 1e20):
        assert_clear_4xx(client.post(f"/api/v1/runs/{run_id}/reschedule", json={"delay": delay}))
    token = client.post("/api/v1/auth/public-tokens", json={"scopes": [], "expirationTime": 1e20})
    assert_clear_4xx(token, 400)
    for timeout in ("99999999999w", 1e20):
        assert_clear_4xx(client.post("/api/v1/waitpoints/tokens", json={"timeout": timeout}))
    period = client.get("/api/v1/runs", params={"filter[createdAt][period]": "3000000d"})
    assert_clear_4xx(period, 400)
    assert_clear_4xx(client.get("/api/v1/schedules", params={"page": 99999999999999}), 400)
    huge = {"operations": [{"type": "set", "key": "n", "value": 1e308},
                           {"type": "increment", "key": "n", "value": 1e308}]}
    assert_clear_4xx(client.put(f"/api/v1/runs/{run_id}/metadata", json=huge), 400)
    nul = {"operations": [{"type": "set", "key": f"k{NUL}", "value": 1}]}
    assert_clear_4xx(client.put(f"/api/v1/runs/{run_id}/metadata", json=nul), 400)


def test_bad_manifests_are_refused_with_the_task_named(
    api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    http = httpx.Client(base_url=api_server.url, headers={
        "Authorization": f"Bearer {project_keys['dev']}"})
    for definition in (
        {"id": "m", "queue": "str"},
        {"id": "m", "queue": {"name": "q", "concurrency_limit": "ten"}},
        {"id": "m", "retry": {"max_attempts": "3"}},
        {"id": "m", "machine": "galaxy-brain-99x"},
        {"id": "m", "max_duration": 1e300},
        {"id": "m", "schedule": "0 0 31 2 *"},
        {"id": f"m{NUL}"},
    ):
        body = {"instance_id": "5f0e8d7c-0000-4000-8000-000000000001", "content_hash": "h",
                "tasks": [definition]}
        answer = http.post("/engine/v1/worker/register", json=body)
        assert_clear_4xx(answer, 400, 422)


def test_schedules_and_waitpoint_limits(client: httpx.Client, task: str) -> None:
    never = client.post(
        "/api/v1/schedules", json={"task": "t", "cron": "0 0 31 2 *", "deduplicationKey": "n"}
    )
    assert_clear_4xx(never, 400)
    assert "never fires" in never.json()["error"]
    dedup = {"task": "t", "cron": "0 * * * *", "deduplicationKey": f"d{NUL}"}
    assert_clear_4xx(client.post("/api/v1/schedules", json=dedup), 422)
    for tags in (["x" * 100_000], [f"a{NUL}"], [str(i) for i in range(11)]):
        assert_clear_4xx(client.post("/api/v1/waitpoints/tokens", json={"tags": tags}), 400)


def test_an_internal_error_answers_json_and_is_logged_with_its_id(
    client: httpx.Client, task: str, db: Db, api_server: ApiServer
) -> None:
    body = {"task": "t", "cron": "0 * * * *", "deduplicationKey": "broken"}
    created = client.post("/api/v1/schedules", json=body).json()
    db.execute("UPDATE schedules SET cron = 'not a cron' WHERE id = %s", (created["id"],))
    broken = client.get(f"/api/v1/schedules/{created['id']}")
    assert broken.status_code == 500
    body = broken.json()
    assert body["error"] == "internal error" and body["requestId"]
    assert api_server.log_path is not None
    deadline = time.monotonic() + 10
    while body["requestId"] not in api_server.log_path.read_text():
        assert time.monotonic() < deadline, "the request id is not in the server log"
        time.sleep(0.05)


def test_request_key_reused_for_another_task_is_a_conflict(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    protocol_worker(api_server, project_keys["dev"], "one", "two")
    headers = {"x-trigger-request-idempotency-key": "req-1"}
    first = client.post("/api/v1/tasks/one/trigger", json={"payload": 1}, headers=headers)
    again = client.post("/api/v1/tasks/one/trigger", json={"payload": 1}, headers=headers)
    assert first.json()["id"] == again.json()["id"]
    assert_clear_4xx(
        client.post("/api/v1/tasks/two/trigger", json={"payload": 1}, headers=headers), 409
    )
    batch = client.post("/api/v1/tasks/one/batch", json={"items": [{"payload": 1}]},
                        headers=headers)
    assert_clear_4xx(batch, 409)


def test_a_dev_key_cannot_dequeue_with_a_prod_version(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    prod = protocol_worker(api_server, project_keys["prod"], "v")
    dev = protocol_worker(api_server, project_keys["dev"], "v")
    run_id = trigger(client, "v")
    answer = dev.http.post("/engine/v1/worker/dequeue", json={
        "instance_id": dev.instance_id, "versions": [prod.version_id], "max_runs": 1})
    assert_clear_4xx(answer, 400)
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] in ("QUEUED", "PENDING_VERSION")


def test_journal_and_wait_calls_need_the_lease_holder(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    worker = protocol_worker(api_server, project_keys["dev"], "j")
    run_id = trigger(client, "j")
    worker.dequeue()
    journal = {"seq": 0, "kind": "step", "key": "k", "outcome": 1}
    assert_clear_4xx(client.post(f"/engine/v1/runs/{run_id}/journal", json=journal), 422)
    wait = {"seq": 0, "kind": "wait_duration", "until": "1h"}
    assert_clear_4xx(client.post(f"/engine/v1/runs/{run_id}/wait", json=wait), 422)
    other = {**journal, "instance_id": "5f0e8d7c-0000-4000-8000-000000000002"}
    assert_clear_4xx(client.post(f"/engine/v1/runs/{run_id}/journal", json=other), 409)
    mine = {**journal, "instance_id": worker.instance_id}
    assert client.post(f"/engine/v1/runs/{run_id}/journal", json=mine).status_code == 200


def _raw_request(url: str, head: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        return sock.recv(4096)


def test_headers_and_bodies_are_bounded_before_they_are_read(
    api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    big = httpx.get(f"{api_server.url}/api/v1/runs",
                    headers={"Authorization": f"Bearer {project_keys['dev']}",
                             "x-filler": "f" * 100_000})
    assert_clear_4xx(big, 431)
    # a 20 MB body announced but never sent: refused from its Content-Length at once
    answer = _raw_request(api_server.url, (
        "POST /api/v1/tasks/t/trigger HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {project_keys['dev']}\r\n"
        "Content-Type: application/json\r\nContent-Length: 20000000\r\n\r\n"
    ).encode())
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_the_openapi_document_is_public_and_declares_the_bearer_scheme(
    api_server: ApiServer,
) -> None:
    doc = httpx.get(f"{api_server.url}/openapi.json").json()
    assert doc["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    trigger_op = doc["paths"]["/api/v1/tasks/{task_id}/trigger"]["post"]
    assert trigger_op["security"] == [{"bearerAuth": []}]
    assert "requestBody" in trigger_op
    assert httpx.get(f"{api_server.url}/docs").status_code == 200


def test_dsn_passwords_never_leave_the_task_logger() -> None:
    from worker.sdk import logger as task_logger

    seen: list[tuple[str, str, dict[str, Any]]] = []
    task_logger.set_sink(lambda level, message, attrs: seen.append((level, message, attrs)))
    try:
        task_logger.logger.info("connecting to postgresql://app:hunter2@db:5432/x",
                                target={"url": "redis://:s3cret@cache:6379"})
    finally:
        task_logger.set_sink(None)
    [(_, message, attrs)] = seen
    assert "hunter2" not in message and "s3cret" not in str(attrs)
    assert "postgresql://app:[REDACTED]@db:5432/x" in message


def test_callback_urls_use_the_public_url_and_access_logs_hide_the_credential(
    api_server: ApiServer, project_keys: dict[str, str], tmp_path: Path
) -> None:
    # the shared API: no TRIGGER_PUBLIC_URL, so the listen address, never the Host header
    shared = httpx.post(f"{api_server.url}/api/v1/waitpoints/tokens", json={}, headers={
        "Authorization": f"Bearer {project_keys['dev']}", "Host": "evil.example"})
    assert shared.json()["url"].startswith(api_server.url + "/"), shared.json()["url"]
    port = free_port()
    log = tmp_path / "api.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
        env={**os.environ, "DATABASE_URL": api_server.database_url,
             "TRIGGER_PUBLIC_URL": "https://trigger.example.com/"},
        stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        token = httpx.post(f"{url}/api/v1/waitpoints/tokens", json={}, headers={
            "Authorization": f"Bearer {project_keys['dev']}", "Host": "evil.example"}).json()
        assert token["url"].startswith("https://trigger.example.com/api/v1/waitpoints/tokens/")
        digest = token["url"].rsplit("/", 1)[1]
        called = httpx.post(url + token["url"].removeprefix("https://trigger.example.com"),
                            json={"ok": True})
        assert called.status_code == 200
    finally:
        stop_process(process)
    text = log.read_text()
    assert "/callback/[redacted]" in text and digest not in text
