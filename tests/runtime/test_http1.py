"""The worker protocol's HTTP client (worker/sdk/http1.py, api_client.py) against the real API
over real HTTP: keep-alive reuse, an API restart, fail-over, timeouts, 4xx and 5xx.

Where a test needs the server to misbehave (5xx, a dropped connection), a small HTTP relay
sits in front of the real API: it answers the first requests its own way, then forwards.
"""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, ApiServer, free_port, stop_process
from worker.runtime.api_client import ProtocolError, WorkerApi
from worker.sdk.http1 import ConnectError, Http1Client, RequestTimeout, TransportError

MANIFEST = [{"id": "h1-task", "queue": {"name": "task/h1-task"}}]


def http1(api: WorkerApi) -> Http1Client:
    client = api.http
    assert isinstance(client, Http1Client)
    return client


async def register(api: WorkerApi) -> str:
    reply = await api.register(uuid.uuid4().hex, MANIFEST, {})
    return str(reply["version_id"])


class Relay:
    """An HTTP/1.1 server in front of ``upstream``: each request in ``script`` order gets the
    scripted answer (a status, or ``"drop"``: close without answering); requests after the
    script are forwarded, the reply sent back chunked."""

    def __init__(self, upstream: str, script: list[int | str]) -> None:
        self.upstream = Http1Client(upstream)
        self.script = list(script)
        self.seen: list[str] = []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server
        self.server.close()
        await self.upstream.aclose()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ")
                headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
                headers = {k.lower(): v for k, v in headers.items()}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(path)
                step = self.script.pop(0) if self.script else None
                if step == "drop":
                    writer.close()
                    return
                if isinstance(step, int):
                    text = b"scripted"
                    writer.write(b"HTTP/1.1 %d X\r\ncontent-length: %d\r\n\r\n%s"
                                 % (step, len(text), text))
                    continue
                forward = {k: v for k, v in headers.items()
                           if k in ("authorization", "content-type")}
                reply = await self.upstream.request(method, path, content=body, headers=forward)
                chunks = [reply.content[i:i + 100] for i in range(0, len(reply.content), 100)]
                writer.write(b"HTTP/1.1 %d X\r\ntransfer-encoding: chunked\r\n\r\n"
                             % reply.status_code + b"".join(
                                 b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


async def test_one_kept_alive_connection_carries_the_calls(api: WorkerApi) -> None:
    await register(api)
    for _ in range(10):
        assert (await api.heartbeat([]))["lost"] == []
    assert http1(api).connections_opened == 1
    # concurrent calls open more connections, which are then kept and reused
    await asyncio.gather(*(api.heartbeat([]) for _ in range(4)))
    opened = http1(api).connections_opened
    await asyncio.gather(*(api.heartbeat([]) for _ in range(4)))
    assert http1(api).connections_opened == opened <= 5


def start_api_on(port: int, database_url: str, log: Path, *options: str,
                 tls: ssl.SSLContext | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *options],
        env={**os.environ, "DATABASE_URL": database_url}, cwd=ROOT,
        stdout=log.open("ab"), stderr=subprocess.STDOUT)
    client = Http1Client(f"{'https' if tls else 'http'}://127.0.0.1:{port}", ssl_context=tls)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            asyncio.run(client.request("GET", "/healthz"))
            return process
        except TransportError:
            assert process.poll() is None, log.read_text()[-2000:]
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the API did not start")


async def test_the_client_reconnects_after_the_api_restarts(
        api_server: ApiServer, project_keys: dict[str, str], tmp_path: Path) -> None:
    port = free_port()
    process = await asyncio.to_thread(start_api_on, port, api_server.database_url,
                                      tmp_path / "api.log")
    api = WorkerApi(f"http://127.0.0.1:{port}", project_keys["dev"], str(uuid.uuid4()))
    try:
        await register(api)
        await api.heartbeat([])
        stop_process(process)  # its kept-alive connection is closed with it
        with pytest.raises(ConnectError):
            await api.post("/heartbeat", {"instance_id": api.instance_id, "run_ids": []},
                           attempts=1)
        process = await asyncio.to_thread(start_api_on, port, api_server.database_url,
                                          tmp_path / "api.log")
        assert (await api.heartbeat([]))["lost"] == []
        assert http1(api).connections_opened == 2
    finally:
        await api.close()
        stop_process(process)


async def test_a_kept_alive_connection_dropped_as_it_is_used_is_replaced(
        api_server: ApiServer, project_keys: dict[str, str]) -> None:
    # first request answered (the connection is kept), the second dropped unanswered: the
    # client sends it again on a new connection; a fresh connection dropped is an error
    async with Relay(api_server.url, [200, "drop"]) as relay:
        client = Http1Client(relay.url)
        assert (await client.request("GET", "/healthz")).status_code == 200
        reply = await client.post("/engine/v1/worker/heartbeat", b"{}")
        assert reply.status_code == 401  # forwarded (no key): the real API answered
        assert client.connections_opened == 2 and len(relay.seen) == 3
        relay.script = ["drop"]
        other = Http1Client(relay.url)
        with pytest.raises(TransportError):
            await other.request("GET", "/healthz")
        await client.aclose()
        await other.aclose()


async def test_requests_fail_over_to_the_next_replica(
        api_server: ApiServer, project_keys: dict[str, str]) -> None:
    down = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    api = WorkerApi(f"{down},{api_server.url}", project_keys["dev"], str(uuid.uuid4()))
    await register(api)
    assert api.current == 1
    await api.close()
    # a replica answering 503 (going down behind a proxy): the next try goes to the other
    async with Relay(api_server.url, [503]) as relay:
        api = WorkerApi(f"{relay.url},{api_server.url}", project_keys["dev"], str(uuid.uuid4()))
        await register(api)
        assert api.current == 1 and len(relay.seen) == 1
        await api.close()
    # the first unreachable, the second refuses with 400: refused at once, not retried
    async with Relay(api_server.url, [400]) as relay:
        api = WorkerApi(f"{down},{relay.url}", project_keys["dev"], str(uuid.uuid4()))
        with pytest.raises(ProtocolError) as refused:
            await api.post("/heartbeat", {"run_ids": []}, attempts=3)
        assert refused.value.status == 400 and relay.seen == ["/engine/v1/worker/heartbeat"]
        await api.close()


async def test_a_slow_response_times_out_and_its_connection_is_not_reused(
        api: WorkerApi) -> None:
    version = await register(api)
    client = http1(api)
    body = (b'{"instance_id": "%s", "versions": ["%s"], "max_runs": 1, "wait_ms": 5000}'
            % (api.instance_id.encode(), version.encode()))
    with pytest.raises(RequestTimeout):
        await client.post("/engine/v1/worker/dequeue", body,
                          headers={"content-type": "application/json"}, timeout=0.3)
    assert (await api.heartbeat([]))["lost"] == []
    assert client.connections_opened == 2
    # the protocol client's own long-poll waits as long as it asked for
    assert await api.dequeue([version], 1, 300) == []


async def test_a_4xx_is_refused_at_once_and_a_5xx_is_retried(
        api_server: ApiServer, project_keys: dict[str, str]) -> None:
    async with Relay(api_server.url, []) as relay:
        wrong = WorkerApi(relay.url, "tr_dev_wrong", str(uuid.uuid4()))
        with pytest.raises(ProtocolError) as refused:
            await register(wrong)
        assert refused.value.status == 401 and len(relay.seen) == 1
        await wrong.close()

        api = WorkerApi(relay.url, project_keys["dev"], str(uuid.uuid4()))
        relay.script = [500, 502]
        assert await register(api)  # the third try, forwarded (chunked) to the real API
        assert len(relay.seen) == 4
        relay.script = [500, 500]
        with pytest.raises(ProtocolError) as failed:
            await api.post("/heartbeat", {"instance_id": api.instance_id, "run_ids": []},
                           attempts=2)
        assert failed.value.status == 500
        await api.close()


async def test_behind_a_proxy_setting_the_client_is_httpx(
        api_server: ApiServer, project_keys: dict[str, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    down = f"http://127.0.0.1:{free_port()}"
    api = WorkerApi(f"{down},{api_server.url}", project_keys["dev"], str(uuid.uuid4()))
    assert not isinstance(api.http, Http1Client)
    await register(api)  # the unreachable one failed over, as with http1
    assert api.current == 1 and (await api.heartbeat([]))["lost"] == []
    with pytest.raises(ProtocolError) as refused:
        await api.post("/dequeue", {"instance_id": api.instance_id})
    assert 400 <= refused.value.status < 500
    await api.close()


def test_responses_to_head_and_without_length() -> None:
    """A body that ends when the server closes (HTTP/1.0 style) and a HEAD reply's length."""

    async def main() -> list[Any]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (await reader.readuntil(b"\r\n\r\n")).startswith(b"HEAD"):
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
            writer.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = Http1Client(f"http://127.0.0.1:{port}/base")
        got = [(await client.request("HEAD", "/x")).content,
               (await client.request("GET", "/y")).text]
        server.close()
        await client.aclose()
        return got

    assert asyncio.run(main()) == [b"", "until the end"]


async def test_a_run_through_the_protocol_calls(api: WorkerApi, api_server: ApiServer,
                                                project_keys: dict[str, str]) -> None:
    """dequeue → complete (typed reply) → release, over one connection."""
    version = await register(api)
    with api_server.client() as client:
        client.headers["Authorization"] = f"Bearer {project_keys['dev']}"
        reply = client.post("/api/v1/tasks/h1-task/trigger", json={"payload": {"n": 1}})
        assert reply.status_code == 200, reply.text
        run_id = reply.json()["id"]
    (run,) = await api.dequeue([version], 1, 5000)
    assert run["run_id"] == run_id and run["payload"] == '{"n":1}'
    done = await api.complete([{"run_id": run_id, "attempt_number": run["attempt_number"],
                                "ok": True, "output": "2", "output_type": "application/json"}])
    assert [(r.run_id, r.outcome.value, r.status) for r in done.results] == [
        (run_id, "RUN_FINISHED", "COMPLETED")]
    assert done.runs is None  # no lease asked for: the reply has no runs
    assert await api.release([run_id]) == []
    assert http1(api).connections_opened == 1


async def test_https_is_verified_and_works(api_server: ApiServer, project_keys: dict[str, str],
                                           tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    trusting = ssl.create_default_context(cafile=str(cert))
    port = free_port()
    process = await asyncio.to_thread(
        start_api_on, port, api_server.database_url, tmp_path / "api.log",
        "--ssl-keyfile", str(key), "--ssl-certfile", str(cert), tls=trusting)
    url = f"https://127.0.0.1:{port}"
    try:
        client = Http1Client(url, {"authorization": f"Bearer {project_keys['dev']}"},
                             ssl_context=trusting)
        for _ in range(3):
            reply = await client.post("/engine/v1/worker/heartbeat",
                                      b'{"instance_id": "%s", "run_ids": []}'
                                      % str(uuid.uuid4()).encode(),
                                      headers={"content-type": "application/json"})
            assert reply.status_code == 200 and reply.json()["lost"] == []
        assert client.connections_opened == 1
        await client.aclose()
        # the worker's client checks certificates (against the CA bundle: this one is not in it)
        api = WorkerApi(url, project_keys["dev"], str(uuid.uuid4()))
        with pytest.raises(ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await api.post("/heartbeat", {"run_ids": []}, attempts=1)
        await api.close()
    finally:
        stop_process(process)
