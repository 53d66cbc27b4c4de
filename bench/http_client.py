"""``python -m bench.http_client``: the worker protocol client, httpx against sdk/http1.py.

The supervisor's side of a request: for each client, sequential POSTs on one kept-alive
connection, in alternating rounds, reporting the p50 wall time of a request and the client
process's CPU time per request (``time.process_time``, load-robust):

- against a stub server (a subprocess answering every request with a fixed JSON reply of the
  size of a one-run ``/dequeue`` reply): the client's own cost, nothing else;
- against the real API (``/engine/v1/worker/heartbeat`` of a fresh worker instance).

The httpx client is configured as the worker's was before http1 (base URL, headers, timeouts,
limits, JSON body encoded by httpx, reply decoded with ``response.json()``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_PG, machine_info, percentile
from bench.systems import Options
from bench.systems.ours import Ours

STUB = r"""
import asyncio, sys
body = b'{"runs": [' + b'{"run_id": "run_x", "payload": "' + b'x' * 1500 + b'"}' + b']}'
reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (
    len(body), body)

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(reply)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""

Send = Callable[[], Awaitable[Any]]


def httpx_sender(url: str, key: str, path: str, body: dict[str, Any]) -> tuple[Send, Any]:
    import httpx

    client = httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {key}"},
        timeout=httpx.Timeout(30.0, connect=3.0),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8), verify=False)

    async def send() -> Any:
        response = await client.post(path, json=body)
        response.raise_for_status()
        return response.json()

    return send, client.aclose


def http1_sender(url: str, key: str, path: str, body: dict[str, Any]) -> tuple[Send, Any]:
    from worker.runtime.api_client import WorkerApi

    api = WorkerApi(url, key, str(body.get("instance_id") or uuid.uuid4()))

    async def send() -> Any:
        return await api.post(path, body)

    return send, api.close


async def measure(make: Callable[..., tuple[Send, Any]], url: str, key: str, path: str,
                  body: dict[str, Any], count: int) -> tuple[float, float]:
    send, close = make(url, key, path, body)
    for _ in range(20):  # connect, warm up
        await send()
    times = []
    cpu0 = time.process_time()
    for _ in range(count):
        t0 = time.perf_counter()
        await send()
        times.append((time.perf_counter() - t0) * 1000)
    cpu = (time.process_time() - cpu0) / count * 1000
    await close()
    return percentile(times, 50), cpu


async def compare(label: str, url: str, key: str, paths: tuple[str, str],
                  body: dict[str, Any], count: int, rounds: int) -> list[str]:
    results: dict[str, list[tuple[float, float]]] = {"httpx": [], "http1": []}
    for _ in range(rounds):
        results["httpx"].append(await measure(httpx_sender, url, key, paths[0], body, count))
        results["http1"].append(await measure(http1_sender, url, key, paths[1], body, count))
    rows = []
    for name, got in results.items():
        p50s = ", ".join(f"{p:.3f}" for p, _ in got)
        cpus = ", ".join(f"{c:.3f}" for _, c in got)
        rows.append(f"| {label} | {name} | {p50s} | {cpus} |")
    return rows


async def main_async(args: argparse.Namespace) -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # as in the supervisor
    stub = subprocess.Popen([sys.executable, "-c", STUB], stdout=subprocess.PIPE, text=True)
    assert stub.stdout
    port = int(stub.stdout.readline())
    rows = ["| server | client | p50 per request (ms), by round | client CPU per request (ms) |",
            "|---|---|---|---|"]
    try:
        body = {"instance_id": str(uuid.uuid4()), "run_ids": []}
        rows += await compare("stub (1.6 kB reply)", f"http://127.0.0.1:{port}", "k",
                              ("/x", "/x"), body, args.count, args.rounds)
    finally:
        stub.kill()
        stub.wait()
    if args.api:
        ours = Ours(Options(n=0, latency_n=0, pg_url=args.pg, redis_url="",
                            log_dir=Path(tempfile.mkdtemp(prefix="bench-http-"))))
        ours.setup()
        try:
            rows += await compare("API /heartbeat", ours.api_url, ours.key,
                                  ("/engine/v1/worker/heartbeat", "/heartbeat"), body,
                                  args.count, args.rounds)
        finally:
            ours.teardown()
    print(f"load average {os.getloadavg()}, {machine_info().get('python', '')}")
    print("\n".join(rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pg", default=DEFAULT_PG)
    parser.add_argument("--no-api", dest="api", action="store_false")
    args = parser.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
