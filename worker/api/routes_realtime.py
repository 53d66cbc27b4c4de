"""Realtime over SSE (runs, runs by tag, batches, streams) and public access tokens.

Every endpoint here accepts either the environment's secret key or a public access token
(``Authorization: Bearer eyJ...``) whose scopes cover what is read. Event shapes are in
docs/api.md ("Realtime").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse

from worker.api import routes_electric
from worker.api.auth import AuthError, authenticate
from worker.api.bodies import read_json
from worker.api.presenters import present_run
from worker.api.state import api_state, engine_of
from worker.common.statuses import FINAL_STATUSES
from worker.engine import public_tokens, realtime
from worker.engine.errors import EngineError, Forbidden, NotFound
from worker.engine.public_tokens import InvalidToken, Principal

router = APIRouter()
KEEPALIVE_SECONDS = 15.0
TAG_SNAPSHOT = 100


async def principal(request: Request) -> Principal:
    """The secret key (full access to its environment) or a verified public access token."""
    header = request.headers.get("authorization", "")
    scheme, _, credential = header.partition(" ")
    credential = credential.strip()
    if scheme.lower() == "bearer" and public_tokens.looks_like_jwt(credential):
        try:
            return await engine_of(request).verify_public_token(credential)
        except InvalidToken as exc:
            raise AuthError(str(exc)) from None
    return Principal(await authenticate(request))


Auth = Annotated[Principal, Depends(principal)]


def secret_key_only(who: Principal, *scopes: str) -> None:
    """Writes need the secret key, or a token holding one of ``scopes``."""
    if who.scopes is not None and not who.allows(*scopes):
        raise Forbidden("this needs the secret key (or a token with " + " / ".join(scopes) + ")")


def hub(request: Request) -> realtime.RealtimeHub:
    """The process's hub (created in the app lifespan; it connects on first use)."""
    hub_: realtime.RealtimeHub = engine_of(request).realtime
    return hub_


def _sse(event: str, data: Any, event_id: Any = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\n".encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def _as_of(row: dict[str, Any], change: realtime.RunChange) -> dict[str, Any]:
    """The row as it was at ``change`` when the row has moved on since (keeps every status
    a run went through, in order, even when a subscriber reads late)."""
    if change.updated_us >= row["updated_us"] or change.status == row["status"]:
        return row
    past = dict(row, status=change.status, updated_us=change.updated_us)
    if change.status not in FINAL_STATUSES:
        past.update(output=None, output_type=None, completed_at=None)
    return past


class _Watch:
    """Which runs a subscription follows and when it is over."""

    def __init__(self, until_final: Callable[[dict[str, str]], bool] | None) -> None:
        self.seen_us: dict[str, int] = {}
        self.statuses: dict[str, str] = {}
        self.until_final = until_final

    def fresh(self, row: dict[str, Any]) -> bool:
        return row["updated_us"] > self.seen_us.get(row["id"], -1)

    def record(self, row: dict[str, Any]) -> None:
        self.seen_us[row["id"]] = row["updated_us"]
        self.statuses[row["id"]] = row["status"]

    def finished(self) -> bool:
        return self.until_final is not None and self.until_final(self.statuses)


def _all_final(statuses: dict[str, str]) -> bool:
    return bool(statuses) and all(s in FINAL_STATUSES for s in statuses.values())


async def _run_events(
    request: Request,
    who: Principal,
    snapshot: Callable[[], Any],
    follows: Callable[[realtime.RunChange], bool],
    fetch: Callable[[str], Any],
    watch: _Watch,
) -> AsyncIterator[bytes]:
    """Snapshot first, then every change, as SSE ``run`` events; ``end`` when finished."""
    sub = await hub(request).subscribe(who.env.id)
    counter = 0
    try:
        # Subscribed before the snapshot, so no change can fall in between.
        resync = True
        while True:
            if resync:
                for row in await snapshot():
                    if who.can_read_run(row) and watch.fresh(row):
                        watch.record(row)
                        counter += 1
                        yield _sse("run", present_run(row), counter)
                resync = False
            if watch.finished():
                yield _sse("end", {})
                return
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout=KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if item is realtime.RESYNC:
                resync = True
                continue
            if not isinstance(item, realtime.RunChange) or not follows(item):
                continue
            if item.updated_us <= watch.seen_us.get(item.run_id, -1):
                continue  # already sent (the snapshot was newer)
            row = await fetch(item.run_id)
            if row is None or not who.can_read_run(row):
                continue
            row = _as_of(row, item)
            watch.record(row)
            counter += 1
            yield _sse("run", present_run(row), counter)
    finally:
        hub(request).unsubscribe(sub)


def _streaming(request: Request, who: Principal, body: AsyncIterator[bytes]
               ) -> StreamingResponse:
    """An SSE response, counted against the environment's stream cap (api/stream_caps.py)."""
    return StreamingResponse(
        api_state(request).caps.stream(who.env.id, body),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


@router.get("/realtime/v1/runs/{run_id}")
async def subscribe_run(run_id: str, request: Request, who: Auth) -> Response:
    pool = engine_of(request).pool
    first = await realtime.run_row(pool, who.env, run_id)
    if first is None:
        raise NotFound(f"run {run_id!r} not found in the {who.env.slug} environment")
    if not who.can_read_run(first):
        raise Forbidden(f"this public access token does not grant read:runs:{run_id}")
    if "offset" in request.query_params:  # Trigger.dev's SDK: ElectricSQL's shape protocol
        return await routes_electric.serve(
            request, who, routes_electric.run_shape(request, who, run_id)
        )

    async def snapshot() -> list[dict[str, Any]]:
        row = await realtime.run_row(pool, who.env, run_id)
        return [row] if row else []

    return _streaming(request, who,
        _run_events(
            request,
            who,
            snapshot,
            follows=lambda change: change.run_id == run_id,
            fetch=lambda rid: realtime.run_row(pool, who.env, rid),
            watch=_Watch(_all_final),
        )
    )


@router.get("/realtime/v1/runs")
async def subscribe_tag(request: Request, who: Auth) -> Response:
    """``?tags=a`` (one tag); ``&stopWhenFinished=true`` ends once every run seen is final."""
    if "offset" in request.query_params:  # Trigger.dev's SDK: ElectricSQL's shape protocol
        return await routes_electric.serve(request, who, routes_electric.tag_shape(request, who))
    tag = request.query_params.get("tags") or request.query_params.get("tag")
    if not tag or "," in tag:
        raise EngineError("pass exactly one tag: /realtime/v1/runs?tags=<tag>")
    who.require("read:runs", f"read:tags:{tag}")
    stop = request.query_params.get("stopWhenFinished", "false").lower() == "true"
    pool = engine_of(request).pool

    async def fetch(run_id: str) -> dict[str, Any] | None:
        row = await realtime.run_row(pool, who.env, run_id)
        return row if row and tag in (row["tags"] or []) else None

    return _streaming(request, who,
        _run_events(
            request,
            who,
            snapshot=lambda: realtime.runs_with_tag(pool, who.env, tag, TAG_SNAPSHOT),
            follows=lambda change: True,
            fetch=fetch,
            watch=_Watch(_all_final if stop else None),
        )
    )


@router.get("/realtime/v1/batches/{batch_id}")
async def subscribe_batch(batch_id: str, request: Request, who: Auth) -> Response:
    who.require("read:runs", f"read:batch:{batch_id}")
    pool = engine_of(request).pool
    await realtime.batch_runs(pool, who.env, batch_id)  # 404 before the stream starts
    if "offset" in request.query_params:  # Trigger.dev's SDK: ElectricSQL's shape protocol
        return await routes_electric.serve(
            request, who, routes_electric.batch_shape(request, who, batch_id)
        )
    return _streaming(request, who,
        _run_events(
            request,
            who,
            snapshot=lambda: realtime.batch_runs(pool, who.env, batch_id),
            follows=lambda change: change.batch_id == batch_id,
            fetch=lambda rid: realtime.run_row(pool, who.env, rid),
            watch=_Watch(_all_final),
        )
    )


# --- streams -------------------------------------------------------------------------------


@router.post("/realtime/v1/streams/{run_id}/{stream}")
async def append_stream(run_id: str, stream: str, request: Request, who: Auth) -> dict[str, Any]:
    """Body ``{"chunks": [json, ...], "done": false}``."""
    secret_key_only(who, f"write:runs:{run_id}")
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("chunks", []), list):
        raise EngineError('body must be {"chunks": [<json values>], "done": <bool>}')
    return await engine_of(request).append_stream(who.env,
        run_id,
        stream,
        body.get("chunks") or [],
        bool(body.get("done")),
    )


async def _stream_events(
    request: Request, who: Principal, run_id: str, stream: str, after: int
) -> AsyncIterator[bytes]:
    pool = engine_of(request).pool
    sub = await hub(request).subscribe(who.env.id)
    try:
        while True:
            chunks = await realtime.read_chunks(pool, run_id, stream, after)
            for chunk in chunks:
                after = chunk["seq"]
                if chunk["done"]:
                    yield _sse("end", {}, after)
                    return
                yield f"id: {after}\nevent: chunk\ndata: {chunk['data']}\n\n".encode()
            if chunks:
                continue  # there may be more than one page
            brief = await realtime.run_brief(pool, who.env, run_id)
            if brief["status"] in FINAL_STATUSES:
                # the writer is gone: read what it wrote before finishing, then stop
                if not await realtime.read_chunks(pool, run_id, stream, after, 1):
                    yield _sse("end", {}, after)
                    return
                continue
            with contextlib.suppress(TimeoutError):
                while True:
                    item = await asyncio.wait_for(sub.queue.get(), timeout=KEEPALIVE_SECONDS)
                    if (
                        item is realtime.RESYNC
                        or (
                            isinstance(item, realtime.StreamChange)
                            and item.run_id == run_id
                            and item.stream == stream
                        )
                        or (isinstance(item, realtime.RunChange) and item.run_id == run_id)
                    ):
                        break
                continue
            yield b": keepalive\n\n"
    finally:
        hub(request).unsubscribe(sub)


@router.get("/realtime/v1/streams/{run_id}/{stream}")
async def read_stream(run_id: str, stream: str, request: Request, who: Auth) -> StreamingResponse:
    """Every chunk from the start (or after ``Last-Event-ID``), then live ones, as SSE."""
    realtime.check_stream_name(stream)
    brief = await engine_of(request).run_brief(who.env, run_id)
    if not who.can_read_run(brief):
        raise Forbidden(f"this public access token does not grant read:runs:{run_id}")
    try:
        after = int(request.headers.get("last-event-id") or 0)
    except ValueError:
        raise EngineError("Last-Event-ID must be the integer id of the last chunk read") from None
    return _streaming(request, who, _stream_events(request, who, run_id, stream, after))


# --- public access tokens ------------------------------------------------------------------


@router.post("/api/v1/auth/public-tokens")
async def create_public_token(request: Request, who: Auth) -> dict[str, Any]:
    """Body ``{"scopes": ["read:runs:run_…"], "expirationTime": "15m"}`` → ``{"token"}``."""
    secret_key_only(who)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise EngineError('body must be {"scopes": [...], "expirationTime": "15m"}')
    created = await engine_of(request).create_public_token(
        who.env, body.get("scopes"), body.get("expirationTime"),
        one_time=body.get("oneTimeUse") is True,
    )
    return {"token": created["token"], "expiresAt": created["claims"]["exp"]}


@router.post("/api/v1/auth/jwt/claims")
async def jwt_claims_to_sign(who: Auth) -> dict[str, Any]:
    """The claims Trigger.dev's SDK signs into a public token with the secret key."""
    secret_key_only(who)
    return {"sub": who.env.id, "pub": True}


@router.get("/api/v1/auth/jwt/claims")
async def jwt_claims(who: Auth) -> dict[str, Any]:
    return {
        "sub": who.env.id,
        "pub": who.scopes is not None,
        "scopes": sorted(who.scopes) if who.scopes is not None else None,
    }
