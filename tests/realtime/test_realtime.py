"""Realtime through the real API: SSE subscriptions (run, tag, batch), streams, public tokens."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker

STRING_ERROR = {"type": "STRING_ERROR", "raw": "boom"}


@pytest.fixture
def key(project_keys: dict[str, str]) -> str:
    return project_keys["dev"]


@pytest.fixture
def api(api_server: ApiServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=api_server.url, headers=api_server.headers(key), timeout=30)


class Sse:
    """Collects the events of one SSE endpoint in the background."""

    def __init__(self, url: str, path: str, token: str, **params: str) -> None:
        self.events: list[tuple[str, Any]] = []
        self.first = asyncio.Event()
        self.status: int | None = None
        self._task = asyncio.create_task(self._read(url, path, token, params))

    async def _read(self, url: str, path: str, token: str, params: dict[str, str]) -> None:
        headers = {"authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, timeout=30) as http, http.stream(
            "GET", path, headers=headers, params=params
        ) as response:
            self.status = response.status_code
            if response.status_code != 200:
                self.first.set()
                return
            event = None
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.events.append((event or "message", orjson.loads(line[6:])))
                    self.first.set()
                    if event == "end":
                        return

    async def done(self, timeout: float = 8) -> list[tuple[str, Any]]:
        await asyncio.wait_for(self._task, timeout)
        return self.events

    def statuses(self) -> list[str]:
        return [data["status"] for event, data in self.events if event == "run"]


async def test_run_subscription_sees_every_status_change_in_order(
    api: httpx.Client, api_server: ApiServer, key: str
) -> None:
    worker = ProtocolWorker(api_server.url, key, ["rt-task"], retry={"max_attempts": 3})
    run_id = api.post("/api/v1/tasks/rt-task/trigger", json={"payload": 1}).json()["id"]
    sub = Sse(api_server.url, f"/realtime/v1/runs/{run_id}", key)
    await asyncio.wait_for(sub.first.wait(), 5)

    def drive() -> None:  # a burst of transitions, faster than a reader re-reads rows
        first = worker.dequeue()[0]
        worker.complete(first, ok=False, error=STRING_ERROR, retry={"delay_ms": 0})
        second = worker.dequeue()[0]
        api.put(f"/api/v1/runs/{run_id}/metadata", json={"metadata": {"step": 2}})
        worker.complete(second, ok=True, output='{"done": true}')

    await asyncio.to_thread(drive)
    events = await sub.done()
    assert sub.statuses() == ["QUEUED", "EXECUTING", "QUEUED", "EXECUTING", "EXECUTING",
                              "COMPLETED"]
    runs = [data for event, data in events if event == "run"]
    assert runs[4]["metadata"] == {"step": 2}
    assert runs[-1]["output"] == {"done": True} and runs[-1]["isCompleted"]
    assert events[-1][0] == "end"


async def test_tag_and_batch_subscriptions(api: httpx.Client, api_server: ApiServer,
                                           key: str) -> None:
    worker = ProtocolWorker(api_server.url, key, ["rt-tag"])
    tagged = [api.post("/api/v1/tasks/rt-tag/trigger",
                       json={"payload": i, "options": {"tags": ["user_7"]}}).json()["id"]
              for i in range(2)]
    api.post("/api/v1/tasks/rt-tag/trigger", json={"payload": "other"})
    tag_sub = Sse(api_server.url, "/realtime/v1/runs", key, tags="user_7",
                  stopWhenFinished="true")
    await asyncio.wait_for(tag_sub.first.wait(), 5)

    def drain() -> None:
        for run in worker.dequeue(max_runs=3):
            worker.complete(run, ok=True, output="1")

    await asyncio.to_thread(drain)
    events = await tag_sub.done()
    seen = {data["id"] for event, data in events if event == "run"}
    assert seen == set(tagged)

    batch = api.post("/api/v1/tasks/rt-tag/batch",
                     json={"items": [{"payload": 1}, {"payload": 2}]}).json()
    batch_sub = Sse(api_server.url, f"/realtime/v1/batches/{batch['id']}", key)
    await asyncio.wait_for(batch_sub.first.wait(), 5)
    await asyncio.to_thread(drain)
    events = await batch_sub.done()
    finals = {d["id"]: d["status"] for e, d in events if e == "run" and d["isCompleted"]}
    assert finals == {r["id"]: "COMPLETED" for r in batch["runs"]}


async def test_stream_is_read_live_while_written_and_from_the_start_later(
    api: httpx.Client, api_server: ApiServer, key: str
) -> None:
    ProtocolWorker(api_server.url, key, ["rt-stream"])
    run_id = api.post("/api/v1/tasks/rt-stream/trigger", json={}).json()["id"]
    path = f"/realtime/v1/streams/{run_id}/llm"
    live = Sse(api_server.url, path, key)
    for i in range(5):
        assert api.post(path, json={"chunks": [f"tok{i}"]}).json() == {"seq": i + 1}
        # each chunk reaches the reader before the next one is written
        deadline = time.monotonic() + 5
        while len(live.events) < i + 1:
            assert time.monotonic() < deadline, f"chunk {i} not received live"
            await asyncio.sleep(0.01)
    api.post(path, json={"chunks": [{"n": 5}], "done": True})
    assert [d for e, d in await live.done() if e == "chunk"] == [
        "tok0", "tok1", "tok2", "tok3", "tok4", {"n": 5}]

    late = Sse(api_server.url, path, key)
    assert len(await late.done()) == 7  # 6 chunks from the start, then "end"
    closed = api.post(path, json={"chunks": ["more"]})
    assert closed.status_code == 400 and "closed" in closed.json()["error"]


async def test_public_tokens_are_scoped_and_expire(
    api: httpx.Client, api_server: ApiServer, key: str
) -> None:
    ProtocolWorker(api_server.url, key, ["rt-auth"])
    reply = api.post("/api/v1/tasks/rt-auth/trigger", json={"options": {"tags": ["t1"]}})
    run_a, token_a = reply.json()["id"], reply.headers["x-trigger-jwt"]
    run_b = api.post("/api/v1/tasks/rt-auth/trigger", json={}).json()["id"]
    assert key not in token_a

    def get(path: str, token: str) -> httpx.Response:
        return httpx.get(f"{api_server.url}{path}", headers={"authorization": f"Bearer {token}"})

    assert get(f"/api/v1/runs/{run_a}/metadata", token_a).status_code == 200
    denied = get(f"/api/v1/runs/{run_b}/metadata", token_a)
    assert denied.status_code == 403 and "read:runs" in denied.json()["error"]
    sub_b = Sse(api_server.url, f"/realtime/v1/runs/{run_b}", token_a)
    await sub_b.done()
    assert sub_b.status == 403
    sub_a = Sse(api_server.url, f"/realtime/v1/runs/{run_a}", token_a)
    await asyncio.wait_for(sub_a.first.wait(), 5)
    assert sub_a.status == 200 and sub_a.statuses() == ["QUEUED"]
    sub_a._task.cancel()

    tag_token = api.post("/api/v1/auth/public-tokens",
                         json={"scopes": ["read:tags:t1"]}).json()["token"]
    assert get(f"/api/v1/runs/{run_a}/metadata", tag_token).status_code == 200
    assert get(f"/api/v1/runs/{run_b}/metadata", tag_token).status_code == 403
    # a token cannot write, nor mint tokens
    put = httpx.put(f"{api_server.url}/api/v1/runs/{run_a}/metadata", json={"metadata": {}},
                    headers={"authorization": f"Bearer {token_a}"})
    assert put.status_code == 403
    mint = httpx.post(f"{api_server.url}/api/v1/auth/public-tokens", json={"scopes": ["read:runs"]},
                      headers={"authorization": f"Bearer {token_a}"})
    assert mint.status_code == 403

    forged = token_a[:-4] + ("AAAA" if not token_a.endswith("AAAA") else "BBBB")
    assert get(f"/api/v1/runs/{run_a}/metadata", forged).status_code == 401
    short = api.post("/api/v1/auth/public-tokens",
                     json={"scopes": [f"read:runs:{run_a}"], "expirationTime": "3s"}).json()
    assert get(f"/api/v1/runs/{run_a}/metadata", short["token"]).status_code == 200
    await asyncio.sleep(max(0.0, short["expiresAt"] - time.time()) + 0.1)
    expired = get(f"/api/v1/runs/{run_a}/metadata", short["token"])
    assert expired.status_code == 401 and "expired" in expired.json()["error"]
    bad = api.post("/api/v1/auth/public-tokens", json={"scopes": ["everything"]})
    assert bad.status_code == 400


async def test_a_run_handed_to_a_waiting_worker_still_shows_queued(
    api: httpx.Client, api_server: ApiServer, key: str
) -> None:
    """A trigger that finds a worker's long-poll waiting inserts its run already leased (one
    row write: engine/handoff.py); subscribers still see it QUEUED first (migration 0021)."""
    from tests.engine.test_handoff import LongPoll, _waiting

    worker = ProtocolWorker(api_server.url, key, ["rt-handed"])
    # a first tagged run, finished: the API process has the definition cached since, and the
    # subscription's first event (its snapshot) says it is open
    first = api.post("/api/v1/tasks/rt-handed/trigger",
                     json={"payload": 0, "options": {"tags": ["handed"]}}).json()["id"]
    [run] = worker.dequeue(wait_ms=2000)
    assert run["run_id"] == first
    worker.complete(run, ok=True, output="0")
    sub = Sse(api_server.url, "/realtime/v1/runs", key, tags="handed")
    await asyncio.wait_for(sub.first.wait(), 5)
    poll = LongPoll(worker)
    await asyncio.to_thread(_waiting, poll)
    run_id = api.post("/api/v1/tasks/rt-handed/trigger",
                      json={"payload": 1, "options": {"tags": ["handed"]}}).json()["id"]
    await asyncio.to_thread(poll.join, 8)
    assert poll.runs is not None and [r["run_id"] for r in poll.runs] == [run_id]
    with psycopg.connect(api_server.database_url) as conn:  # leased in the insert itself
        row = conn.execute("SELECT started_at = created_at FROM runs WHERE id = %s",
                           (run_id,)).fetchone()
    assert row == (True,)
    worker.complete(poll.runs[0], ok=True, output="1")

    def seen() -> list[str]:
        return [data["status"] for event, data in sub.events
                if event == "run" and data["id"] == run_id]

    deadline = time.monotonic() + 8
    while "COMPLETED" not in seen() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    sub._task.cancel()
    assert seen() == ["QUEUED", "EXECUTING", "COMPLETED"]
