"""``GET /api/v3/runs/{id}?waitMs=N``: a retrieve that waits for the run to end (docs/api.md),
and the SDK's ``runs.poll`` on top of it. Real API process, real Postgres."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker
from worker.sdk import transport
from worker.sdk.runs import runs


def _trigger(client: httpx.Client, task: str, payload: Any = 1) -> str:
    reply = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": payload})
    reply.raise_for_status()
    return str(reply.json()["id"])


def test_a_waiting_retrieve_answers_when_the_run_ends(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["waited"])
    run_id = _trigger(client, "waited")
    leased = worker.dequeue(wait_ms=5000)
    assert [r["run_id"] for r in leased] == [run_id]

    def finish_soon() -> None:
        time.sleep(0.5)
        worker.complete(leased[0], ok=True, output='{"done": true}',
                        output_type="application/json")

    finisher = threading.Thread(target=finish_soon)
    started = time.monotonic()
    finisher.start()
    waited = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "30000"}, timeout=40)
    elapsed = time.monotonic() - started
    finisher.join()
    assert waited.status_code == 200
    body = waited.json()
    assert body["status"] == "COMPLETED" and body["output"] == {"done": True}
    assert elapsed < 25, "answered at the timeout, not when the run ended"
    # the same body as the plain retrieve
    assert body == client.get(f"/api/v3/runs/{run_id}").json()


def test_a_waiting_retrieve_returns_the_unfinished_run_at_the_timeout(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["slow"])
    run_id = _trigger(client, "slow")
    started = time.monotonic()
    reply = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "300"})
    assert time.monotonic() - started >= 0.3
    assert reply.status_code == 200
    assert reply.json()["id"] == run_id
    assert reply.json()["isCompleted"] is False
    # a final run answers at once, whatever it asks for
    client.post(f"/api/v2/runs/{run_id}/cancel").raise_for_status()
    canceled = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "60000"}, timeout=10)
    assert canceled.json()["status"] == "CANCELED"


def test_a_waiting_retrieve_needs_auth_and_a_valid_wait(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["authz"])
    run_id = _trigger(client, "authz")
    anonymous = httpx.get(f"{api_server.url}/api/v3/runs/{run_id}", params={"waitMs": "1000"})
    assert anonymous.status_code == 401
    for bad in ("-1", "soon", "1.5", "9" * 5000):  # the last is past int()'s digit limit
        reply = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": bad})
        assert reply.status_code == 400, bad
        assert "waitMs" in reply.json()["error"]
    nul = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "1\x00"})
    assert nul.status_code == 400 and "NUL" in nul.json()["error"]
    missing = client.get("/api/v3/runs/run_nosuchrun", params={"waitMs": "5000"})
    assert missing.status_code == 404


def test_sdk_poll_returns_when_the_run_ends(
    env: tuple[httpx.Client, str], api_server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["polled"])
    run_id = _trigger(client, "polled", 7)
    leased = worker.dequeue(wait_ms=5000)
    # this test's project, whatever an earlier test configured in this process
    monkeypatch.setitem(transport.default.settings, "api_url", api_server.url)
    monkeypatch.setitem(transport.default.settings, "secret_key", key)
    requests: list[str] = []
    connect = transport.default.session

    def recording(base_url: str) -> Any:  # the SDK's requests, as they go out
        session = connect(base_url)

        class Recorder:
            async def request(self, method: str, path: str, **options: Any) -> Any:
                requests.append(path)
                return await session.request(method, path, **options)

        return Recorder()

    monkeypatch.setattr(transport.default, "session", recording)

    async def scenario() -> Any:
        async def finish_soon() -> None:
            await asyncio.sleep(0.5)
            await asyncio.to_thread(worker.complete, leased[0], ok=True, output="8",
                                    output_type="application/json")

        finishing = asyncio.create_task(finish_soon())
        # poll_interval far above the wait: only the long-poll can answer this fast
        run = await runs.poll(run_id, poll_interval=30, timeout=20)
        await finishing
        return run

    run = asyncio.run(scenario())
    assert run.status == "COMPLETED" and run.output == 8
    assert 1 <= len(requests) <= 2, requests  # one long-poll (a second only after a resync)
    assert all("waitMs=" in r for r in requests)
    with pytest.raises(TimeoutError, match="still"):
        other = _trigger(client, "polled")
        asyncio.run(runs.poll(other, poll_interval=0.05, timeout=0.5))

