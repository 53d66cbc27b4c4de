"""The streamed ``/dequeue`` (docs/protocol.md, "Streamed dequeue"): one response that brings
each run as the API leases it, against the real API over real HTTP, through the worker's own
client (worker/runtime/api_client.py, worker/sdk/http1.py)."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ApiServer
from tests.runtime.live import Worker, trigger, wait_final
from tests.runtime.projects import write_project
from worker.engine.keys import create_project
from worker.runtime.api_client import WorkerApi
from worker.sdk.http1 import Http1Client

MANIFEST = [{"id": "streamed", "queue": {"name": "task/streamed"}}]
STOPPING_TASKS = """
from worker.sdk.task import task


@task(id="stream-ok")
async def ok(payload):
    return payload["n"]
"""


async def _version(api: WorkerApi) -> str:
    return str((await api.register(uuid.uuid4().hex, MANIFEST, {}))["version_id"])


def _connections(api: WorkerApi) -> int:
    assert isinstance(api.http, Http1Client)
    return api.http.connections_opened


async def _trigger(api_server: ApiServer, key: str) -> str:
    async with httpx.AsyncClient(base_url=api_server.url,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        reply = await client.post("/api/v1/tasks/streamed/trigger", json={"payload": 1})
        assert reply.status_code == 200, reply.text
        return str(reply.json()["id"])


class Batches:
    """What a stream brought, batch by batch, and an event per batch."""

    def __init__(self) -> None:
        self.runs: list[list[str]] = []
        self.arrived = asyncio.Event()

    async def __call__(self, runs: list[dict[str, Any]]) -> None:
        self.runs.append([run["run_id"] for run in runs])
        self.arrived.set()

    async def next(self) -> None:
        await asyncio.wait_for(self.arrived.wait(), 5)
        self.arrived.clear()


async def test_a_stream_brings_each_run_as_it_is_triggered_over_one_response(
        api: WorkerApi, api_server: ApiServer, project_keys: dict[str, str],
        database_url: str) -> None:
    version = await _version(api)
    batches = Batches()
    started = time.monotonic()
    stream = asyncio.create_task(api.dequeue_stream([version], 3, 20_000, batches))
    await asyncio.sleep(0.3)  # the stream is open and waits
    triggered = []
    for _ in range(3):
        triggered.append(await _trigger(api_server, project_keys["dev"]))
        await batches.next()
    await asyncio.wait_for(stream, 5)  # three runs asked for, three brought: the stream ends
    assert time.monotonic() - started < 10  # long before its 20 s wait
    assert batches.runs == [[run_id] for run_id in triggered]
    assert _connections(api) == 1  # the registration's connection, then the one stream
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status, lease_owner::text FROM runs WHERE id = ANY(%s)",
                            (triggered,)).fetchall()
    assert rows == [("EXECUTING", api.instance_id)] * 3
    # the connection is kept alive after the stream's end
    assert (await api.heartbeat([]))["lost"] == [] and _connections(api) == 1


async def test_a_stream_with_nothing_to_lease_ends_at_its_wait(api: WorkerApi) -> None:
    version = await _version(api)
    batches = Batches()
    started = time.monotonic()
    await asyncio.wait_for(api.dequeue_stream([version], 5, 400, batches), 10)
    assert batches.runs == [] and 0.35 < time.monotonic() - started < 5


async def test_runs_queued_before_the_stream_come_in_its_first_batch(
        api: WorkerApi, api_server: ApiServer, project_keys: dict[str, str]) -> None:
    version = await _version(api)
    queued = [await _trigger(api_server, project_keys["dev"]) for _ in range(3)]
    batches = Batches()
    await asyncio.wait_for(api.dequeue_stream([version], 2, 20_000, batches), 5)
    # two asked for: one batch of two, and the end (which two: the queue's order, whose ties
    # within a millisecond are not the trigger order)
    (first,) = batches.runs
    assert len(first) == 2 and set(first) < set(queued)
    (left,) = set(queued) - set(first)
    batches = Batches()
    stream = asyncio.create_task(api.dequeue_stream([version], 2, 20_000, batches))
    await batches.next()
    assert batches.runs == [[left]]
    later = await _trigger(api_server, project_keys["dev"])
    await asyncio.wait_for(stream, 5)
    assert batches.runs == [[left], [later]]


async def test_a_worker_that_hangs_up_on_its_stream_is_handed_no_run(
        api: WorkerApi, api_server: ApiServer, project_keys: dict[str, str]) -> None:
    version = await _version(api)
    batches = Batches()
    stream = asyncio.create_task(api.dequeue_stream([version], 5, 20_000, batches))
    await asyncio.sleep(0.3)
    stream.cancel()  # the worker goes: its connection closes
    with pytest.raises(asyncio.CancelledError):
        await stream
    await asyncio.sleep(0.5)  # the API hears the hang-up
    run_id = await _trigger(api_server, project_keys["dev"])
    other = WorkerApi(api_server.url, project_keys["dev"], str(uuid.uuid4()))
    try:
        started = time.monotonic()
        (run,) = await other.dequeue([version], 1, 5000)
        # leasable at once, not after the gone stream's lease expired (30 s)
        assert run["run_id"] == run_id and time.monotonic() - started < 4
    finally:
        await other.close()
    assert batches.runs == []


def test_the_client_reads_lines_however_the_chunks_fall() -> None:
    """A line split across chunks, two in one, the last without its newline; then, on the same
    connection, a reply with a length (an API that does not stream answers so) and a 4xx
    (its body is the response's content: no line is handed over)."""

    async def main() -> tuple[list[bytes], list[bytes], Any, int]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for chunk in (b'{"runs":[1', b']}\n\n{"runs":[2]}\n{"ru', b'ns":[3]}'):
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                await writer.drain()
                await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 12\r\n\r\n{"runs":[4]}')
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 422 Unprocessable\r\ncontent-length: 3\r\n\r\nbad")
            await writer.drain()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Http1Client(f"http://127.0.0.1:{port}")
        first: list[bytes] = []
        second: list[bytes] = []

        async def into(seen: list[bytes]) -> Any:
            async def take(line: bytes) -> None:
                seen.append(line)
            return take

        await client.request("POST", "/a", lines=await into(first))
        await client.request("POST", "/b", lines=await into(second))
        refused = await client.request("POST", "/c", lines=await into(second))
        opened = client.connections_opened
        server.close()
        await client.aclose()
        return first, second, refused, opened

    first, second, refused, opened = asyncio.run(main())
    assert first == [b'{"runs":[1]}', b'{"runs":[2]}', b'{"runs":[3]}']
    assert second == [b'{"runs":[4]}']
    assert (refused.status_code, refused.content) == (422, b"bad")
    assert opened == 1


async def test_runs_triggered_while_a_worker_stops_on_its_open_stream_go_back_to_the_queue(
        api_server: ApiServer, project_keys: dict[str, str], tmp_path: Path,
        database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that stops lets its open stream end (as it let a long-poll return); the runs
    the stream brings meanwhile are handed back at once: another worker runs them without
    waiting for a lease to expire (30 s)."""
    monkeypatch.setenv("TRIGGER_DEQUEUE_WAIT_MS", "3000")
    key = project_keys["dev"]
    project = write_project(tmp_path / "proj", {"trigger/tasks.py": STOPPING_TASKS})
    first = Worker(project, api_server.url, key, concurrency=2)
    async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        await first.wait_event("version_registered")
        await asyncio.sleep(0.3)  # its stream is open and waits
        closing = asyncio.create_task(first.close())
        await first.wait_event("stopping")
        run_ids = [await trigger(client, "stream-ok", {"n": n}) for n in range(3)]
        # the stop waits for the stream, which brought these runs (each handed back, leased
        # again, until the slots it asked for were used up: a bounded churn, never a strand)
        assert not closing.done()
        await closing
        with psycopg.connect(database_url) as conn:
            held = conn.execute("SELECT count(*) FROM runs WHERE id = ANY(%s) AND "
                                "lease_owner IS NOT NULL", (run_ids,)).fetchone()
        assert held == (0,)
        started = time.monotonic()
        second = Worker(project, api_server.url, key, concurrency=2)
        try:
            runs = [await wait_final(client, run_id, timeout=20) for run_id in run_ids]
        finally:
            await second.close()
        assert [run["status"] for run in runs] == ["COMPLETED"] * 3
        assert time.monotonic() - started < 15


async def test_what_a_long_poll_refuses_a_stream_refuses_before_its_head(
        api: WorkerApi, api_server: ApiServer, project_keys: dict[str, str]) -> None:
    """A version of another environment: the same 400 as the long-poll's, as plain JSON."""
    await _version(api)
    other_key = create_project(api_server.database_url, f"p-{uuid.uuid4().hex[:8]}")["dev"]
    other = WorkerApi(api_server.url, other_key, str(uuid.uuid4()))
    try:
        foreign = await _version(other)
    finally:
        await other.close()
    async with httpx.AsyncClient(base_url=api_server.url, headers={
            "Authorization": f"Bearer {project_keys['dev']}"}) as client:
        reply = await client.post("/engine/v1/worker/dequeue", json={
            "instance_id": api.instance_id, "versions": [foreign], "max_runs": 2,
            "wait_ms": 5000, "stream": True})
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert "not registered in the dev environment" in reply.json()["error"]


@pytest.mark.parametrize("bad", [
    {"stream": "not a flag"}, {"stream": [True]}, {"stream": {"a": {"b": {"c": 1}}}},
    {"wait_ms": 10**400, "stream": True}, {"max_runs": 0, "stream": True},
    {"instance_id": "nul\u0000id", "stream": True},
])
async def test_a_bad_streamed_dequeue_body_is_a_4xx_saying_what_to_fix(
        bad: dict[str, Any], api: WorkerApi, api_server: ApiServer,
        project_keys: dict[str, str]) -> None:
    version = await _version(api)
    body = {"instance_id": api.instance_id, "versions": [version], "max_runs": 2,
            "wait_ms": 1000, **bad}
    async with httpx.AsyncClient(base_url=api_server.url, headers={
            "Authorization": f"Bearer {project_keys['dev']}",
            "content-type": "application/json"}) as client:
        reply = await client.post("/engine/v1/worker/dequeue", content=json.dumps(body))
    # a number past JSON's doubles is refused by the JSON reader (400), the rest by the model
    assert reply.status_code in (400, 422), reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"].startswith(("invalid request", "request body is not valid"))
