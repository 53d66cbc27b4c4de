"""The public API and the worker protocol, through a real API process and real Postgres."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker


def _worker(api_server: ApiServer, key: str, tasks: list[str], **options: object) -> ProtocolWorker:
    return ProtocolWorker(api_server.url, key, tasks, **options)


def test_health_needs_no_key_but_everything_else_does(api_server: ApiServer) -> None:
    assert httpx.get(f"{api_server.url}/healthz").json() == {"ok": True}
    missing = httpx.post(f"{api_server.url}/api/v1/tasks/x/trigger", json={})
    assert missing.status_code == 401
    assert "Authorization: Bearer" in missing.json()["error"]
    wrong = httpx.get(
        f"{api_server.url}/api/v3/runs/run_x",
        headers={"Authorization": "Bearer tr_dev_wrongwrongwrongwrongwron"},
    )
    assert wrong.status_code == 401
    assert "TRIGGER_SECRET_KEY" in wrong.json()["error"]
    worker = httpx.post(f"{api_server.url}/engine/v1/worker/dequeue", json={})
    assert worker.status_code == 401


def test_keys_are_stored_hashed(api_server: ApiServer, project_keys: dict[str, str]) -> None:
    with psycopg.connect(api_server.database_url) as conn:
        stored = [bytes(r[0]) for r in conn.execute("SELECT key_hash FROM api_keys")]
        text = " ".join(str(r) for r in conn.execute("SELECT * FROM api_keys"))
    assert project_keys["dev"] not in text
    import hashlib

    assert hashlib.sha256(project_keys["dev"].encode()).digest() in stored


def test_bad_requests_say_what_to_fix(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    _worker(api_server, key, ["known"])
    unknown = client.post("/api/v1/tasks/nope/trigger", json={"payload": 1})
    assert unknown.status_code == 404
    assert "'nope' is not registered" in unknown.json()["error"]
    malformed = client.post(
        "/api/v1/tasks/known/trigger",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert "not valid JSON" in malformed.json()["error"]
    bad_tags = client.post(
        "/api/v1/tasks/known/trigger",
        json={"payload": 1, "options": {"tags": [f"t{i}" for i in range(11)]}},
    )
    assert bad_tags.status_code == 422
    assert "at most 10 tags" in bad_tags.json()["error"]
    unknown_option = client.post(
        "/api/v1/tasks/known/trigger", json={"payload": 1, "options": {"maxAttemps": 2}}
    )
    assert unknown_option.status_code == 422
    assert "maxAttemps" in unknown_option.json()["error"]
    too_big = client.post("/api/v1/tasks/known/trigger", json={"payload": "x" * (3 * 1024 * 1024)})
    assert too_big.status_code == 413
    assert "limit is" in too_big.json()["error"]
    assert client.get("/api/v3/runs/run_missing").status_code == 404
    assert client.get("/api/v1/runs", params={"filter[status]": "DONE"}).status_code == 400


def test_trigger_lease_complete_retrieve(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = _worker(api_server, key, ["echo"], max_duration=60)
    run_id = client.post(
        "/api/v1/tasks/echo/trigger", json={"payload": {"n": 1}, "options": {"tags": ["a"]}}
    ).json()["id"]
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "QUEUED"
    [leased] = worker.dequeue()
    assert leased["run_id"] == run_id and leased["attempt_number"] == 1
    assert leased["payload"] == '{"n":1}' and leased["max_duration"] == 60
    assert leased["ctx"]["run"]["tags"] == ["a"]
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "EXECUTING"
    result = worker.complete(
        leased, ok=True, output='{"doubled":2}', output_type="application/json"
    )
    assert result == {"run_id": run_id, "outcome": "RUN_FINISHED", "status": "COMPLETED"}
    run = client.get(f"/api/v3/runs/{run_id}").json()
    assert run["status"] == "COMPLETED" and run["output"] == {"doubled": 2}
    assert run["isCompleted"] and run["isSuccess"] and run["attemptCount"] == 1
    # completing twice is refused by the fence
    assert worker.complete(leased, ok=True, output="1")["outcome"] == "LEASE_LOST"


def test_worker_retry_then_final_failure(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = _worker(api_server, key, ["flaky"], retry={"max_attempts": 2})
    run_id = client.post("/api/v1/tasks/flaky/trigger", json={"payload": None}).json()["id"]
    error = {"type": "BUILT_IN_ERROR", "name": "ValueError", "message": "boom", "stackTrace": ""}
    [first] = worker.dequeue()
    assert first["max_attempts"] == 2 and not first["is_final_attempt"]
    assert (
        worker.complete(first, ok=False, error=error, retry={"delay_ms": 0})["outcome"]
        == "RETRY_QUEUED"
    )
    [second] = worker.dequeue(wait_ms=5000)
    assert second["attempt_number"] == 2 and second["is_final_attempt"]
    # the worker asks for a retry, but attempts are exhausted: the engine refuses
    outcome = worker.complete(second, ok=False, error=error, retry={"delay_ms": 0})
    assert outcome == {"run_id": run_id, "outcome": "RUN_FINISHED", "status": "FAILED"}
    run = client.get(f"/api/v3/runs/{run_id}").json()
    assert run["status"] == "FAILED" and run["error"]["message"] == "boom"
    assert [a["status"] for a in run["attempts"]] == ["FAILED", "FAILED"]


def test_crash_retries_with_the_locked_backoff(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    retry = {"max_attempts": 3, "min_timeout_ms": 1500, "factor": 2, "randomize": False}
    worker = _worker(api_server, key, ["crashy"], retry=retry)
    run_id = client.post("/api/v1/tasks/crashy/trigger", json={"payload": 1}).json()["id"]
    [leased] = worker.dequeue()
    crash = {"type": "INTERNAL_ERROR", "code": "TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE"}
    worker.complete(leased, ok=False, error=crash)  # no retry from the worker: engine looks up
    with psycopg.connect(api_server.database_url) as conn:
        status, delay = conn.execute(
            "SELECT status, extract(epoch FROM run_at - updated_at) FROM runs WHERE id = %s",
            (run_id,),
        ).fetchone()  # type: ignore[misc]
    assert status == "RETRYING_AFTER_FAILURE"
    assert float(delay) == pytest.approx(1.5, abs=0.01)  # min_timeout * factor**0, no jitter
    [again] = worker.dequeue(wait_ms=10_000)
    assert again["run_id"] == run_id and again["attempt_number"] == 2


def test_abort_and_timeouts_are_not_retried(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = _worker(api_server, key, ["t"], retry={"max_attempts": 5})
    cases = [
        ({"type": "INTERNAL_ERROR", "code": "MAX_DURATION_EXCEEDED"}, False, "TIMED_OUT"),
        ({"type": "BUILT_IN_ERROR", "name": "AbortTaskRunError", "message": "no"}, True, "FAILED"),
    ]
    for error, skipped, status in cases:
        run_id = client.post("/api/v1/tasks/t/trigger", json={"payload": 1}).json()["id"]
        [leased] = worker.dequeue()
        result = worker.complete(
            leased, ok=False, error=error, skipped_retrying=skipped, retry={"delay_ms": 0}
        )
        assert result["status"] == status
        assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == status


def test_expired_lease_is_rescued_and_late_completion_refused(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    retry = {"max_attempts": 3, "min_timeout_ms": 10, "randomize": False}
    first = _worker(api_server, key, ["slow"], retry=retry)
    run_id = client.post("/api/v1/tasks/slow/trigger", json={"payload": 1}).json()["id"]
    [held] = first.dequeue()
    # no heartbeat: the 3 s lease expires and the rescuer fails the attempt, which retries
    second = ProtocolWorker(api_server.url, key, [])
    second.version_id = first.version_id
    [rescued] = second.dequeue(wait_ms=15_000)
    assert rescued["run_id"] == run_id and rescued["attempt_number"] == 2
    assert first.heartbeat([run_id])["lost"] == [run_id]
    assert first.complete(held, ok=True, output="1")["outcome"] == "LEASE_LOST"
    assert second.complete(rescued, ok=True, output="2")["outcome"] == "RUN_FINISHED"
    run = client.get(f"/api/v3/runs/{run_id}").json()
    assert run["output"] == 2
    assert run["attempts"][0]["error"]["code"] == "TASK_RUN_STALLED_EXECUTING"


def test_heartbeat_keeps_the_lease(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    worker = _worker(api_server, key, ["beat"])
    run_id = client.post("/api/v1/tasks/beat/trigger", json={"payload": 1}).json()["id"]
    [held] = worker.dequeue()
    for _ in range(8):  # 4 s > the 3 s lease
        assert worker.heartbeat([run_id])["lost"] == []
        time.sleep(0.5)
    assert worker.complete(held, ok=True, output="1")["outcome"] == "RUN_FINISHED"


def test_cancel_fences_the_worker(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    worker = _worker(api_server, key, ["c"])
    run_id = client.post("/api/v1/tasks/c/trigger", json={"payload": 1}).json()["id"]
    [held] = worker.dequeue()
    assert client.post(f"/api/v2/runs/{run_id}/cancel").json()["canceled"] == [run_id]
    assert worker.heartbeat([run_id])["lost"] == [run_id]
    assert worker.complete(held, ok=True, output="1")["outcome"] == "LEASE_LOST"
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "CANCELED"
    assert client.post(f"/api/v2/runs/{run_id}/cancel").json()["canceled"] == []


def test_long_poll_wakes_on_trigger(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    worker = _worker(api_server, key, ["wake"])
    timer = threading.Timer(
        0.3, lambda: client.post("/api/v1/tasks/wake/trigger", json={"payload": 1})
    )
    started = time.monotonic()
    timer.start()
    runs = worker.dequeue(wait_ms=20_000)
    assert len(runs) == 1
    assert time.monotonic() - started < 15  # woken, not timed out


def test_batch_reports_bad_items_and_creates_the_rest(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    _worker(api_server, key, ["a", "b"])
    reply = client.post(
        "/api/v2/tasks/batch",
        json={
            "items": [
                {"task": "a", "payload": 1},
                {"task": "ghost", "payload": 2},
                {"task": "b", "payload": 3},
            ]
        },
    ).json()
    assert reply["runCount"] == 3
    assert [r.get("taskIdentifier") for r in reply["runs"]] == ["a", "ghost", "b"]
    assert "not registered" in reply["runs"][1]["error"]
    listed = client.get("/api/v1/runs", params={"filter[batch]": reply["id"]}).json()["data"]
    assert {r["id"] for r in listed} == {reply["runs"][0]["id"], reply["runs"][2]["id"]}
    per_task = client.post(
        "/api/v1/tasks/a/batch", json={"items": [{"payload": i} for i in range(5)]}
    )
    assert len(per_task.json()["runs"]) == 5


def test_list_filters_and_cursor_pagination(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    _worker(api_server, key, ["l1", "l2"])
    ids = [
        client.post(
            f"/api/v1/tasks/{'l1' if i % 2 else 'l2'}/trigger",
            json={"payload": i, "options": {"tags": [f"n{i % 3}"]}},
        ).json()["id"]
        for i in range(7)
    ]
    seen, after = [], None
    while True:
        params = {"page[size]": "3", **({"page[after]": after} if after else {})}
        page = client.get("/api/v1/runs", params=params).json()
        seen += [r["id"] for r in page["data"]]
        after = page["pagination"].get("next")  # absent on the last page (Trigger.dev's SDK)
        if after is None:
            assert "next" not in page["pagination"]
            break
    assert seen == list(reversed(ids))
    l1 = client.get("/api/v1/runs", params={"filter[taskIdentifier]": "l1"}).json()["data"]
    assert len(l1) == 3 and {r["taskIdentifier"] for r in l1} == {"l1"}
    tagged = client.get("/api/v1/runs", params={"filter[tag]": "n0"}).json()["data"]
    assert len(tagged) == 3
    # several values mean any of them; createdAt bounds may be epoch milliseconds
    either = client.get("/api/v1/runs", params={"filter[tag]": "n0,n1"}).json()["data"]
    assert len(either) == 5 and {t for r in either for t in r["tags"]} == {"n0", "n1"}
    assert all(r["env"]["name"] == "dev" for r in either)
    future_ms = str(int((time.time() + 3600) * 1000))
    later = client.get("/api/v1/runs", params={"filter[createdAt][from]": future_ms}).json()
    assert later["data"] == [] and later["pagination"] == {}
    queued = client.get("/api/v1/runs", params={"filter[status]": "QUEUED"}).json()["data"]
    assert len(queued) == 7


def test_http_retries_of_one_request_create_one_run(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    _worker(api_server, key, ["once"])
    request_key = uuid.uuid4().hex

    def send(_: int) -> str:
        reply = client.post(
            "/api/v1/tasks/once/trigger",
            json={"payload": 1},
            headers={"x-trigger-request-idempotency-key": request_key},
        )
        return reply.json()["id"]

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(send, range(16)))
    assert len(ids) == 1
    listed = client.get("/api/v1/runs", params={"filter[taskIdentifier]": "once"}).json()["data"]
    assert len(listed) == 1
