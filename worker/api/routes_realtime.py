"""Realtime over SSE (runs, runs by tag, batches, streams) and public access tokens.

Every endpoint here accepts either the environment's secret key or a public access token
(``Authorization: Bearer eyJ...``) whose scopes cover what is read. Event shapes are in
docs/api.md ("Realtime").
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
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
from worker.engine import public_tokens, realtime, run_feed
from worker.engine.errors import EngineError, Forbidden, NotFound
from worker.engine.public_tokens import InvalidToken, Principal

router = APIRouter()
KEEPALIVE_SECONDS = 15.0


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


async def _run_events(request: Request, who: Principal, feed: run_feed.Feed
                      ) -> AsyncIterator[bytes]:
    """The feed as SSE: ``run`` events numbered from 1, keepalive comments, ``end``."""
    counter = 0
    async for item in run_feed.follow(hub(request), who.env, feed, who.can_read_run,
                                      KEEPALIVE_SECONDS):
        if item == "keepalive":
            yield b": keepalive\n\n"
        elif item == "end":
            yield _sse("end", {})
        else:
            counter += 1
            yield _sse("run", present_run(item), counter)


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

    return _streaming(request, who,
                      _run_events(request, who, run_feed.of_run(pool, who.env, run_id)))


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

    feed = run_feed.of_tag(pool, who.env, tag, until_final=stop)
    return _streaming(request, who, _run_events(request, who, feed))


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
                      _run_events(request, who, run_feed.of_batch(pool, who.env, batch_id)))


# --- streams -------------------------------------------------------------------------------


@router.post("/realtime/v1/streams/{run_id}/{stream}")
async def append_stream(run_id: str, stream: str, request: Request, who: Auth) -> dict[str, object]:
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
async def create_public_token(request: Request, who: Auth) -> dict[str, object]:
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
async def jwt_claims_to_sign(who: Auth) -> dict[str, object]:
    """The claims Trigger.dev's SDK signs into a public token with the secret key."""
    secret_key_only(who)
    return {"sub": who.env.id, "pub": True}


@router.get("/api/v1/auth/jwt/claims")
async def jwt_claims(who: Auth) -> dict[str, object]:
    return {
        "sub": who.env.id,
        "pub": who.scopes is not None,
        "scopes": sorted(who.scopes) if who.scopes is not None else None,
    }
