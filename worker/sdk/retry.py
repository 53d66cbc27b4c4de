"""``retry``: retrying a piece of work inside a run (Trigger.dev's ``retry.onThrow`` and
``retry.fetch``), with the same backoff options as task retries (worker/common/retry.py).

``await retry.on_throw(fn, max_attempts=3)`` calls ``fn`` (sync or async; it may take
``attempt``, the 1-based attempt number, and ``max_attempts``) until it returns, sleeping between
attempts; the last error is raised. ``AbortTaskRunError`` and the errors that stop a run (max
duration, cancel) are never retried. Unlike Trigger.dev (which waits with ``wait.until``), the
sleep is in-process: a long backoff holds the executor instead of checkpointing.

``await retry.fetch(url, method="GET", retry={...}, **httpx_options)`` is an HTTP request
(``httpx``) retried on connection errors and on the statuses named in ``retry["by_status"]``
(``{"500-599": {"max_attempts": 5}}``; ``Retry-After`` in seconds is honoured); the default
retries connection errors and timeouts, ``408``, ``409``, ``429`` and ``5xx`` three times.
Returns the last ``httpx.Response``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from worker.common.retry import next_retry_delay_ms
from worker.sdk.definitions import TaskDefinitionError
from worker.sdk.errors import AbortTaskRunError, MaxDurationExceededError, TaskRunCanceledError
from worker.sdk.task import normalize_retry

NEVER_RETRIED = (AbortTaskRunError, MaxDurationExceededError, TaskRunCanceledError)
DEFAULT_ON_THROW = {"max_attempts": 3, "factor": 2, "min_timeout_ms": 1000,
                    "max_timeout_ms": 60000, "randomize": True}
DEFAULT_BY_STATUS: dict[str, dict[str, Any]] = {"408-409": {}, "429": {}, "500-599": {}}


def _options(options: dict[str, Any]) -> dict[str, Any]:
    try:
        return {**DEFAULT_ON_THROW, **(normalize_retry(options, "retry") or {})}
    except TaskDefinitionError as exc:
        raise ValueError(str(exc)) from None


async def _call(fn: Callable[..., object], attempt: int, max_attempts: int) -> Any:
    try:
        names = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        names = {}  # type: ignore[assignment]
    offered = {"attempt": attempt, "max_attempts": max_attempts}
    result = fn(**{k: v for k, v in offered.items() if k in names})
    if inspect.isawaitable(result):
        result = await result
    return result


def _status_rule(by_status: dict[str, Any], status: int) -> dict[str, Any] | None:
    for spec, rule in by_status.items():
        low, _, high = str(spec).partition("-")
        if int(low) <= status <= int(high or low):
            return dict(rule or {})
    return None


class Retry:
    async def on_throw(self, fn: Callable[..., object], **options: Any) -> Any:
        opts = _options(options)
        attempt = 1
        while True:
            try:
                return await _call(fn, attempt, int(opts["max_attempts"]))
            except NEVER_RETRIED:
                raise
            except Exception:
                if attempt >= int(opts["max_attempts"]):
                    raise
            await asyncio.sleep(next_retry_delay_ms(opts, attempt) / 1000)
            attempt += 1

    async def fetch(self, url: str, method: str = "GET", *, retry: dict[str, Any] | None = None,
                    **httpx_options: Any) -> Any:
        import httpx  # lazy: ``retry.fetch`` is the only user; the rest of retry needs no HTTP

        rules = dict(retry or {})
        by_status = rules.pop("by_status", rules.pop("byStatus", DEFAULT_BY_STATUS))
        connection = _options(rules.pop("connection_error", {}) or {})
        timeout_ms = rules.pop("timeout_in_ms", None)
        if rules:
            raise ValueError(f"retry.fetch: unknown retry option(s) {sorted(rules)}; allowed: "
                             "by_status, connection_error, timeout_in_ms")
        timeout = None if timeout_ms is None else timeout_ms / 1000
        attempt = 1
        async with httpx.AsyncClient(timeout=timeout or 30.0) as http:
            while True:
                try:
                    response = await http.request(method, url, **httpx_options)
                except httpx.TransportError:
                    if attempt >= int(connection["max_attempts"]):
                        raise
                    await asyncio.sleep(next_retry_delay_ms(connection, attempt) / 1000)
                    attempt += 1
                    continue
                rule = _status_rule(by_status, response.status_code)
                if rule is None:
                    return response
                opts = _options(rule)
                if attempt >= int(opts["max_attempts"]):
                    return response
                delay = next_retry_delay_ms(opts, attempt) / 1000
                after = response.headers.get("retry-after")
                if after and after.isdigit():
                    delay = float(after)
                await asyncio.sleep(delay)
                attempt += 1


retry = Retry()
