"""HTTP client of the worker protocol (docs/protocol.md): keep-alive connections to each API.

``api_url`` may list several API replicas, comma-separated (``TRIGGER_API_URL=http://a,http://b``):
requests go to one of them and move to the next when it cannot be reached. Retries back off
quickly and never wait more than :data:`MAX_DELAY` between tries, so a worker is back within
about a second of its API's return (an API restart is the common outage, and it is short).

The transport is worker/sdk/http1.py (asyncio streams), not httpx: the supervisor never
imports httpx, which cost it ~45 % of its CPU under drain and ~10 MiB (docs/benchmarks.md).
Only when a proxy is configured (``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY``) does it go
through httpx, which honours them (and ``NO_PROXY``). Both paths share the SDK's retry loop.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

import orjson

from worker.common.protocol import CompletionResult, DequeuedRun, DequeueRequest
from worker.sdk.http1 import Http1Client, Lines, Response, TransportError, proxy_configured
from worker.sdk.http_retries import RetryPolicy, send_with_retries
from worker.sdk.settings import api_urls

if TYPE_CHECKING:
    from worker.sdk.http_proxied import HttpxSession

PREFIX = "/engine/v1/worker"
#: the longest pause between two tries of a request (and between two dequeues that failed)
MAX_DELAY = 1.0
USER_AGENT = "trigger-worker-supervisor/0.1.0"
_JSON = {"content-type": "application/json"}


def retry_delay(failures: int) -> float:
    """The pause after ``failures`` consecutive failures: 0.1 s doubling up to MAX_DELAY, with
    jitter so that many workers do not all come back in the same instant."""
    return min(MAX_DELAY, 0.1 * 2.0 ** max(0, failures - 1)) * random.uniform(0.75, 1.0)


__all__ = ["MAX_DELAY", "CompleteReply", "ProtocolError", "WorkerApi", "api_urls",
           "retry_delay"]

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


@dataclass(frozen=True)
class CompleteReply:
    """``/complete``'s reply: a result per completion, and the runs leased with it when the
    request asked for them (``lease``; docs/protocol.md)."""

    results: list[CompletionResult]
    #: the runs leased with the completions; None when the reply has no ``runs`` (no lease was
    #: asked for, or an API that does not know ``lease`` ignored it)
    runs: list[DequeuedRun] | None


def _refuse(response: Response) -> NoReturn:
    raise ProtocolError(response.status_code, response.text)


@functools.cache
def _policy(attempts: int) -> RetryPolicy:
    return RetryPolicy(attempts=attempts, retry_statuses=_RETRY_STATUSES,
                       delay=lambda attempt, _response: retry_delay(attempt + 1),
                       fail_over_statuses=_FAIL_OVER_STATUSES,
                       transport_errors=(TransportError,))


def _session(url: str, headers: dict[str, str]) -> Http1Client | HttpxSession:
    if proxy_configured():
        from worker.sdk.http_proxied import HttpxSession

        return HttpxSession(url, headers, timeout=30.0, connect_timeout=3.0)
    # a refused or unreachable API is known at connect: fail fast, try the next
    return Http1Client(url, headers, timeout=30.0, connect_timeout=3.0)


class WorkerApi:
    def __init__(self, api_url: str, secret_key: str, instance_id: str) -> None:
        self.instance_id = instance_id
        self.urls = api_urls(api_url)
        headers = {"authorization": f"Bearer {secret_key}", "user-agent": USER_AGENT}
        self.clients = [_session(url, headers) for url in self.urls]
        self.current = 0

    @property
    def http(self) -> Http1Client | HttpxSession:
        """The connection to the API replica in use now."""
        return self.clients[self.current]

    async def _fail_over(self) -> None:
        self.current = (self.current + 1) % len(self.clients)

    async def send(self, path: str, content: bytes, *, content_type: str = "application/json",
                   timeout: float | None = None, attempts: int = 5,
                   lines: Lines | None = None) -> Response:
        """POST ``content`` to ``path`` (under the API's root) with retries on transport
        errors and 5xx/408/429 (quick backoff, moving to the next API replica when this one
        cannot be reached): the SDK transport's retry loop. Returns the 2xx response (with
        ``lines``, its body went there line by line as it arrived)."""
        headers = _JSON if content_type == "application/json" else {"content-type": content_type}
        return await send_with_retries(
            lambda: self.http.request("POST", path, content=content, headers=headers,
                                      timeout=timeout, lines=lines),
            _policy(attempts),
            fail_over=self._fail_over,
            refuse=_refuse,
            unreachable=lambda exc: exc,
        )

    async def post(self, path: str, body: Mapping[str, object], *,
                   timeout: float | None = None, attempts: int = 5) -> dict[str, Any]:
        """POST a worker protocol call (``path`` under ``/engine/v1/worker``); returns the
        decoded JSON reply, which its reader types (docs/protocol.md)."""
        response = await self.send(PREFIX + path, orjson.dumps(body), timeout=timeout,
                                   attempts=attempts)
        try:
            data = response.json()
        except ValueError:
            data = None
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
        body = DequeueRequest(self.instance_id, versions, max(1, min(max_runs, 100)),
                              wait_ms).to_wire()
        result = await self.post("/dequeue", body, timeout=wait_ms / 1000 + 30, attempts=1)
        return list(result.get("runs") or [])

    async def dequeue_stream(self, versions: list[str], max_runs: int, wait_ms: int,
                             batch: Callable[[list[dict[str, Any]]], Awaitable[None]]) -> None:
        """The streamed ``/dequeue`` (docs/protocol.md, "Streamed dequeue"): ``batch`` gets
        each batch of runs as the API leases it, until the API ends the stream (``max_runs``
        runs in all, or ``wait_ms`` passed). An API that does not stream answers once, as
        the long-poll: that reply is the one batch. Tried once, as the long-poll."""
        body = DequeueRequest(self.instance_id, versions, max(1, min(max_runs, 100)), wait_ms,
                              stream=True).to_wire()

        async def line(raw: bytes) -> None:
            try:
                data = orjson.loads(raw)
            except ValueError:
                data = None
            if not isinstance(data, dict):
                raise ProtocolError(200, f"expected a JSON object per line: {raw[:500]!r}")
            await batch(list(data.get("runs") or []))

        await self.send(PREFIX + "/dequeue", orjson.dumps(body), timeout=wait_ms / 1000 + 30,
                        attempts=1, lines=line)

    async def heartbeat(self, run_ids: list[str], *, stopping: bool = False) -> dict[str, Any]:
        body: dict[str, object] = {"instance_id": self.instance_id, "run_ids": run_ids}
        if stopping:  # the last word of a worker that shuts down: it serves no version now
            body["stopping"] = True
        return await self.post("/heartbeat", body, attempts=2)

    async def complete(self, completions: Sequence[Mapping[str, object]],
                       lease: Mapping[str, object] | None = None) -> CompleteReply:
        """Report completions; with ``lease`` (``{"versions": [...], "max_runs": N}``) the API
        also leases up to N runs in the same call (docs/protocol.md). With a lease it is tried
        once, as ``/dequeue`` is: a retry could lease more runs while the first reply's, lost,
        wait for their leases to expire."""
        body: dict[str, object] = {"instance_id": self.instance_id, "completions": completions}
        if lease is not None:
            body["lease"] = lease
        result = await self.post("/complete", body, attempts=8 if lease is None else 1)
        runs = result.get("runs")
        return CompleteReply(
            [CompletionResult.from_wire(r) for r in result.get("results") or []],
            None if runs is None else [DequeuedRun.from_wire(r) for r in runs])

    async def release(self, run_ids: list[str]) -> list[str]:
        result = await self.post(
            "/release", {"instance_id": self.instance_id, "run_ids": run_ids}, attempts=3)
        return [str(run_id) for run_id in result.get("released") or []]

    async def logs(self, logs: Sequence[Mapping[str, object]]) -> None:
        await self.post("/logs", {"logs": logs}, attempts=3)

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()
