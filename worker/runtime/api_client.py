"""HTTP client of the worker protocol (docs/protocol.md), one keep-alive httpx client per API.

``api_url`` may list several API replicas, comma-separated (``TRIGGER_API_URL=http://a,http://b``):
requests go to one of them and move to the next when it cannot be reached. Retries back off
quickly and never wait more than :data:`MAX_DELAY` between tries, so a worker is back within
about a second of its API's return (an API restart is the common outage, and it is short).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

import httpx

from worker.sdk.settings import api_urls
from worker.sdk.transport import RetryPolicy, send_with_retries

PREFIX = "/engine/v1/worker"
#: the longest pause between two tries of a request (and between two dequeues that failed)
MAX_DELAY = 1.0


def retry_delay(failures: int) -> float:
    """The pause after ``failures`` consecutive failures: 0.1 s doubling up to MAX_DELAY, with
    jitter so that many workers do not all come back in the same instant."""
    return min(MAX_DELAY, 0.1 * 2.0 ** max(0, failures - 1)) * random.uniform(0.75, 1.0)


__all__ = ["MAX_DELAY", "ProtocolError", "WorkerApi", "api_urls", "retry_delay"]

#: the worker's statuses worth another try: every 5xx, request timeout, rate limited
_RETRY_STATUSES = frozenset({408, 429, *range(500, 600)})
#: a proxy or a replica going down: the next try goes to another replica
_FAIL_OVER_STATUSES = frozenset({502, 503, 504})


class ProtocolError(Exception):
    """The API refused a worker request (4xx other than 408/429: retrying will not help), or
    it still failed after the last try."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"{status}: {body[:500]}")
        self.status = status


def _refuse(response: httpx.Response) -> NoReturn:
    raise ProtocolError(response.status_code, response.text)


def _policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, retry_statuses=_RETRY_STATUSES,
                       delay=lambda attempt, _response: retry_delay(attempt + 1),
                       fail_over_statuses=_FAIL_OVER_STATUSES)


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

    async def _fail_over(self) -> None:
        self.current = (self.current + 1) % len(self.clients)

    async def post(self, path: str, body: Mapping[str, object], *,
                   timeout: float | None = None, attempts: int = 5) -> dict[str, Any]:
        """POST with retries on transport errors and 5xx/408/429 (quick backoff, moving to the
        next API replica when this one cannot be reached): the SDK transport's retry loop.
        Returns the decoded JSON reply; its reader types it (docs/protocol.md)."""
        response = await send_with_retries(
            lambda: self.http.post(
                PREFIX + path, json=body,
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT),
            _policy(attempts),
            fail_over=self._fail_over,
            refuse=_refuse,
            unreachable=lambda exc: exc,
        )
        data = response.json()
        if not isinstance(data, dict):
            raise ProtocolError(response.status_code, f"expected a JSON object: {response.text}")
        return data

    async def register(self, content_hash: str, tasks: Sequence[Mapping[str, object]],
                       metadata: Mapping[str, object]) -> dict[str, Any]:
        return await self.post("/register", {
            "instance_id": self.instance_id, "content_hash": content_hash, "tasks": tasks,
            "metadata": metadata})

    async def dequeue(self, versions: list[str], max_runs: int,
                      wait_ms: int) -> list[dict[str, Any]]:
        body = {
            "instance_id": self.instance_id, "versions": versions,
            "max_runs": max(1, min(max_runs, 100)), "wait_ms": wait_ms,
        }
        result = await self.post("/dequeue", body, timeout=wait_ms / 1000 + 30, attempts=1)
        return list(result.get("runs") or [])

    async def heartbeat(self, run_ids: list[str], *, stopping: bool = False) -> dict[str, Any]:
        body: dict[str, object] = {"instance_id": self.instance_id, "run_ids": run_ids}
        if stopping:  # the last word of a worker that shuts down: it serves no version now
            body["stopping"] = True
        return await self.post("/heartbeat", body, attempts=2)

    async def complete(self, completions: Sequence[Mapping[str, object]]) -> list[dict[str, Any]]:
        result = await self.post(
            "/complete", {"instance_id": self.instance_id, "completions": completions},
            attempts=8)
        return list(result.get("results") or [])

    async def complete_and_lease(self, completions: Sequence[Mapping[str, object]],
                                 lease: Mapping[str, object]) -> dict[str, Any]:
        """``/complete`` with a ``lease`` (docs/protocol.md): one try only, as ``/dequeue``
        (a retry could lease runs again whose first reply was lost)."""
        return await self.post("/complete", {"instance_id": self.instance_id,
                                             "completions": completions, "lease": lease},
                               attempts=1)

    async def release(self, run_ids: list[str]) -> list[str]:
        result = await self.post(
            "/release", {"instance_id": self.instance_id, "run_ids": run_ids}, attempts=3)
        return [str(run_id) for run_id in result.get("released") or []]

    async def logs(self, logs: Sequence[Mapping[str, object]]) -> None:
        await self.post("/logs", {"logs": logs}, attempts=3)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
