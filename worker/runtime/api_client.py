"""HTTP client of the worker protocol (docs/protocol.md), one keep-alive httpx client per API.

``api_url`` may list several API replicas, comma-separated (``TRIGGER_API_URL=http://a,http://b``):
requests go to one of them and move to the next when it cannot be reached. Retries back off
quickly and never wait more than :data:`MAX_DELAY` between tries, so a worker is back within
about a second of its API's return (an API restart is the common outage, and it is short).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import httpx

PREFIX = "/engine/v1/worker"
#: the longest pause between two tries of a request (and between two dequeues that failed)
MAX_DELAY = 1.0


def retry_delay(failures: int) -> float:
    """The pause after ``failures`` consecutive failures: 0.1 s doubling up to MAX_DELAY, with
    jitter so that many workers do not all come back in the same instant."""
    return min(MAX_DELAY, 0.1 * 2 ** max(0, failures - 1)) * random.uniform(0.75, 1.0)


def api_urls(api_url: str) -> list[str]:
    urls = [u.strip().rstrip("/") for u in api_url.split(",") if u.strip()]
    if not urls:
        raise ValueError("no API URL given (TRIGGER_API_URL)")
    return urls


class ProtocolError(Exception):
    """The API refused a worker request (4xx other than 408/429): retrying will not help."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status


class WorkerApi:
    def __init__(self, api_url: str, secret_key: str, instance_id: str) -> None:
        self.instance_id = instance_id
        self.urls = api_urls(api_url)
        self.clients = [
            httpx.AsyncClient(
                base_url=url,
                headers={"Authorization": f"Bearer {secret_key}"},
                # a refused or unreachable API is known at connect: fail fast, try the next
                timeout=httpx.Timeout(30.0, connect=3.0),
                limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
                # a TLS context (the CA bundle: ~6 MiB of the supervisor) only for https
                verify=url.startswith("https://"),
            )
            for url in self.urls
        ]
        self.current = 0

    @property
    def http(self) -> httpx.AsyncClient:
        return self.clients[self.current]

    def _fail_over(self) -> None:
        self.current = (self.current + 1) % len(self.clients)

    async def post(self, path: str, body: dict[str, Any], *, timeout: float | None = None,
                   attempts: int = 5) -> Any:
        """POST with retries on transport errors and 5xx/408/429 (quick backoff, moving to the
        next API replica when this one cannot be reached)."""
        for attempt in range(attempts):
            try:
                response = await self.http.post(
                    PREFIX + path, json=body,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
                if response.status_code < 400:
                    return response.json()
                if response.status_code < 500 and response.status_code not in (408, 429):
                    raise ProtocolError(response.status_code, response.text)
                error: Exception = ProtocolError(response.status_code, response.text)
                if response.status_code in (502, 503, 504):
                    self._fail_over()  # a proxy or a replica going down: try another
            except httpx.TransportError as exc:
                error = exc
                self._fail_over()
            if attempt == attempts - 1:
                raise error
            await asyncio.sleep(retry_delay(attempt + 1))
        raise AssertionError("unreachable")

    async def register(self, content_hash: str, tasks: list[dict[str, Any]],
                       metadata: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = await self.post("/register", {
            "instance_id": self.instance_id, "content_hash": content_hash, "tasks": tasks,
            "metadata": metadata})
        return result

    async def dequeue(self, versions: list[str], max_runs: int,
                      wait_ms: int) -> list[dict[str, Any]]:
        body: dict[str, Any] = {
            "instance_id": self.instance_id, "versions": versions,
            "max_runs": max(1, min(max_runs, 100)), "wait_ms": wait_ms,
        }
        result = await self.post("/dequeue", body, timeout=wait_ms / 1000 + 30, attempts=1)
        runs: list[dict[str, Any]] = result.get("runs") or []
        return runs

    async def heartbeat(self, run_ids: list[str], *, stopping: bool = False) -> dict[str, Any]:
        body: dict[str, Any] = {"instance_id": self.instance_id, "run_ids": run_ids}
        if stopping:  # the last word of a worker that shuts down: it serves no version now
            body["stopping"] = True
        result: dict[str, Any] = await self.post("/heartbeat", body, attempts=2)
        return result

    async def complete(self, completions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        result = await self.post(
            "/complete", {"instance_id": self.instance_id, "completions": completions},
            attempts=8)
        results: list[dict[str, Any]] = result.get("results") or []
        return results

    async def release(self, run_ids: list[str]) -> list[str]:
        result = await self.post(
            "/release", {"instance_id": self.instance_id, "run_ids": run_ids}, attempts=3)
        released: list[str] = result.get("released") or []
        return released

    async def logs(self, logs: list[dict[str, Any]]) -> None:
        await self.post("/logs", {"logs": logs}, attempts=3)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
