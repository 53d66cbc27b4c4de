"""``wait``: durable waits and waitpoint tokens (docs/triggerdev-semantics.md, "Waits";
docs/architecture.md, "Waits and checkpoints").

Inside a run: ``await wait.for_(seconds=30)``, ``await wait.until(date=...)``,
``result = await wait.for_token(token)``. Waits of at most 5 seconds sleep in the process;
longer ones checkpoint the run (it holds no executor and no concurrency slot while it waits)
and replay it when the time has come. Tokens work inside and outside runs:
``token = await wait.create_token(timeout="1h")``, ``await wait.complete_token(token.id, data)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from worker.common.serialization import JSON, dumps, loads
from worker.sdk import durable, transport
from worker.sdk.durable import durable_operation
from worker.sdk.idempotency_keys import for_trigger
from worker.sdk.pagination import Page, PageList
from worker.sdk.transport import JsonBody, path_segment, payload_members

#: waits up to this long sleep in the process: no server call, no checkpoint
IN_PROCESS_SECONDS = 5.0


class WaitpointTimeoutError(Exception):
    """The token timed out before anyone completed it."""


@dataclass
class WaitpointToken:
    id: str
    url: str
    is_cached: bool
    public_access_token: str | None = None


@dataclass
class WaitResult:
    """``ok`` with ``output``, or not ``ok`` with ``error``; ``unwrap()`` returns the output or
    raises the error."""

    ok: bool
    output: Any = None
    error: Any = None

    def unwrap(self) -> Any:
        if self.ok:
            return self.output
        if isinstance(self.error, BaseException):
            raise self.error
        raise WaitpointTimeoutError(str(self.error))


def _ttl(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return f"{max(1, round(value.total_seconds()))}s"
    if isinstance(value, int | float):
        return f"{max(1, round(value))}s"
    return str(value)


def decode_output(output: str | None, output_type: str | None) -> Any:
    if output is None:
        return None
    return loads(output, output_type or "application/json")


class Wait:
    async def for_(
        self,
        *,
        seconds: float = 0,
        minutes: float = 0,
        hours: float = 0,
        days: float = 0,
        weeks: float = 0,
        months: float = 0,
        years: float = 0,
        idempotency_key: str | None = None,
        idempotency_key_ttl: object = None,
    ) -> None:
        """Wait for a duration (months are 30 days, years 365)."""
        total = (
            seconds
            + 60 * minutes
            + 3600 * hours
            + 86400 * (days + 7 * weeks + 30 * months + 365 * years)
        )
        if total < 0:
            raise ValueError("a wait cannot be negative")
        await self._until(
            datetime.now(UTC) + timedelta(seconds=total),
            total,
            idempotency_key,
            idempotency_key_ttl,
        )

    async def until(
        self,
        *,
        date: datetime,
        throw_if_in_the_past: bool = False,
        idempotency_key: str | None = None,
        idempotency_key_ttl: object = None,
    ) -> None:
        """Wait until ``date`` (naive datetimes are UTC)."""
        when = date if date.tzinfo else date.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
        if seconds < 0 and throw_if_in_the_past:
            raise ValueError(f"wait.until: {when.isoformat()} is in the past")
        await self._until(when, max(0.0, seconds), idempotency_key, idempotency_key_ttl)

    async def _until(self, when: datetime, seconds: float, key: str | None, ttl: object) -> None:
        if seconds <= IN_PROCESS_SECONDS and key is None:
            await durable.sleep_in_process(seconds, {"type": "duration", "date": when})
            return
        if key is not None:
            key = for_trigger(key)  # a plain string is scoped to the run, as for triggers
        seq, entry = durable.replayed("wait_duration", None)
        await durable.block(
            seq,
            entry,
            "wait_duration",
            {"type": "duration", "date": when},
            until=when.isoformat(),
            idempotency_key=key,
            idempotency_key_ttl=_ttl(ttl),
            checkpoint_now=seconds > IN_PROCESS_SECONDS,
        )

    # --- tokens ---------------------------------------------------------------------------

    async def create_token(
        self,
        *,
        timeout: object = None,
        idempotency_key: str | None = None,
        idempotency_key_ttl: object = None,
        tags: list[str] | str | None = None,
    ) -> WaitpointToken:
        """A token someone completes later (``complete_token`` or its callback ``url``).
        Inside a run it is journaled: a replay gets the same token back."""
        in_run = durable.maybe_state() is not None
        if in_run:
            seq, entry = durable.replayed("create_token", None)
            if entry is not None:
                return WaitpointToken(**entry.outcome)
        body: JsonBody = {
            "timeout": timeout.isoformat() if isinstance(timeout, datetime) else _ttl(timeout),
            # scoped like a trigger's key: a plain string inside a run is the run's own
            "idempotencyKey": None if idempotency_key is None else for_trigger(idempotency_key),
            "idempotencyKeyTTL": _ttl(idempotency_key_ttl),
            "tags": [tags] if isinstance(tags, str) else list(tags or []),
        }
        response = await transport.request(
            "POST",
            "/api/v1/waitpoints/tokens",
            json={k: v for k, v in body.items() if v is not None},
        )
        data = response.json()
        token = WaitpointToken(
            id=data["id"],
            url=data["url"],
            is_cached=data["isCached"],
            public_access_token=data.get("publicAccessToken"),
        )
        if in_run:
            await durable.record(seq, "create_token", None, token.__dict__)
        return token

    async def for_token(self, token: WaitpointToken | str) -> WaitResult:
        """Wait until the token is completed (``ok``) or times out (not ``ok``)."""
        token_id = token.id if isinstance(token, WaitpointToken) else token
        seq, entry = durable.replayed("wait_token", None)
        done = await durable.block(
            seq, entry, "wait_token", {"type": "token", "token": token_id}, waitpoint_id=token_id
        )
        value = decode_output(done.output, done.output_type)
        if done.is_error:
            return WaitResult(
                ok=False,
                error=WaitpointTimeoutError(
                    value.get("message", "timed out") if isinstance(value, dict) else str(value)
                ),
            )
        return WaitResult(ok=True, output=value)

    async def complete_token(self, token: WaitpointToken | str, data: object = None) -> bool:
        """Complete a token (inside or outside runs); completing twice is harmless."""
        token_id = token.id if isinstance(token, WaitpointToken) else token
        if dumps(data)[1] != JSON:
            raise TypeError("token data must be plain JSON")
        await transport.request(
            "POST",
            f"/api/v1/waitpoints/tokens/{path_segment(token_id)}/complete",
            json=payload_members(data, key="data"),
        )
        return True

    async def retrieve_token(self, token: WaitpointToken | str) -> dict[str, Any]:
        token_id = token.id if isinstance(token, WaitpointToken) else token
        response = await transport.request(
            "GET", f"/api/v1/waitpoints/tokens/{path_segment(token_id)}"
        )
        data = dict(response.json())
        data["output"] = decode_output(data.get("output"), data.get("outputType"))
        return data

    def list_tokens(
        self,
        *,
        status: str | None = None,
        idempotency_key: str | None = None,
        tags: list[str] | None = None,
        limit: int = 25,
    ) -> Any:
        """``await wait.list_tokens()`` → the first page of ``limit`` tokens (iterable,
        ``.data``); ``async for token in wait.list_tokens()`` → every token, page by page."""
        params = {"page[size]": str(limit)}
        if status:
            params["filter[status]"] = status
        if idempotency_key:
            params["filter[idempotencyKey]"] = idempotency_key
        if tags:
            params["filter[tags]"] = ",".join(tags)

        async def fetch(cursor: str | None) -> Page[dict[str, Any]]:
            query = {**params, "page[after]": cursor} if cursor else params
            body = await transport.json("GET", "/api/v1/waitpoints/tokens", params=query)
            return Page(list(body["data"]), (body.get("pagination") or {}).get("next"))

        return PageList(fetch)


wait = Wait()


@durable_operation("step")
async def step(name: str, fn: Callable[..., object], *args: object, **kwargs: object) -> Any:
    """Run ``fn(*args, **kwargs)`` once per attempt: its result is journaled, and a replay after
    a checkpoint returns the recorded result instead of running it again.

    Code before a wait runs again each time the run resumes; put side effects (charging a card,
    sending an email) and expensive work in a step. A retry (a new attempt) runs the task from
    the top, steps included, like everything else in it: make a side effect that must happen
    once per run idempotent (e.g. pass the provider an idempotency key made with
    ``idempotency_keys.create(..., scope="run")``). The result must be serialisable.
    """
    seq, entry = durable.replayed("step", name)
    if entry is not None:
        recorded = entry.outcome
        return loads(recorded["data"], recorded["type"])
    result = fn(*args, **kwargs)
    if asyncio.iscoroutine(result):
        result = await result
    data, data_type = dumps(result)
    await durable.record(seq, "step", name, {"data": data, "type": data_type})
    return result
