"""Waitpoint tokens (public REST, Trigger.dev's paths) and the run-side wait protocol.

Public: create / list / retrieve / complete tokens, and the HMAC-signed callback URL that
completes a token without a key. Run side (used by the SDK inside executors): block a run on
a waitpoint, long-poll a waitpoint, journal an operation, checkpoint.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request
from pydantic import AliasChoices, BaseModel, Field, field_validator

from worker.api.auth import authenticate
from worker.api.bodies import read_body, read_json, read_model
from worker.api.presenters_tokens import present_token, present_waitpoint
from worker.api.routes_realtime import principal
from worker.api.state import api_state, engine_of
from worker.common.limits import check_text
from worker.engine import metrics, waitpoints
from worker.engine.errors import EngineError, NotFound, PayloadTooLarge
from worker.engine.keys import Environment
from worker.engine.models import (
    MAX_PAYLOAD_BYTES,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    parse_duration,
    parse_when,
)
from worker.engine.public_tokens import Principal

router = APIRouter()
Env = Annotated[Environment, Depends(authenticate)]
Who = Annotated[Principal, Depends(principal)]

def public_base_url(request: Request) -> str:
    """Where clients reach this API: TRIGGER_PUBLIC_URL, else the address the server listens
    on. Never the request's Host header, which the caller controls."""
    configured = api_state(request).settings.public_url
    if configured:
        return configured
    host, port = request.scope.get("server") or ("127.0.0.1", 3030)
    host = f"[{host}]" if ":" in str(host) else host
    return f"http://{host}:{port}"


#: lifetime of the public token returned with a new waitpoint token
TOKEN_EXPIRY = "24h"


class CreateToken(BaseModel):
    timeout: str | int | datetime | None = None
    idempotency_key: str | None = Field(default=None, alias="idempotencyKey", max_length=2048)
    idempotency_key_ttl: str | int | None = Field(
        default=None, validation_alias=AliasChoices("idempotencyKeyTTL", "idempotencyKeyTtl")
    )
    tags: list[str] | str = Field(default_factory=list)


class CompleteToken(BaseModel):
    data: Any = None


def _encode_output(data: Any) -> tuple[str, str]:
    text = orjson.dumps(data).decode()
    if len(text) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(f"output is {len(text)} bytes; the limit is {MAX_PAYLOAD_BYTES}")
    return text, "application/json"


@router.post("/api/v1/waitpoints/tokens")
async def create_token(request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, CreateToken)
    tags = [body.tags] if isinstance(body.tags, str) else body.tags
    if len(tags) > MAX_TAGS:
        raise EngineError(f"at most {MAX_TAGS} tags per waitpoint token")
    for tag in tags:  # the same rule as run tags
        if not 1 <= len(tag) <= MAX_TAG_LENGTH:
            raise EngineError(f"each waitpoint tag must be 1..{MAX_TAG_LENGTH} characters")
        check_text(tag, "a waitpoint tag", MAX_TAG_LENGTH)
    if body.idempotency_key is not None:
        check_text(body.idempotency_key, "idempotencyKey")
    try:
        row, cached = await engine_of(request).create_token(env,
            timeout=body.timeout,
            idempotency_key=body.idempotency_key,
            idempotency_key_ttl=body.idempotency_key_ttl,
            tags=tags,
        )
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    base = public_base_url(request)
    token = await engine_of(request).create_public_token(
        env, [f"write:waitpoints:{row['id']}"], TOKEN_EXPIRY)
    return {
        "id": row["id"],
        "isCached": cached,
        "url": await engine_of(request).callback_url(env, base, row["id"]),
        "publicAccessToken": token["token"],
    }


@router.get("/api/v1/waitpoints/tokens")
async def list_tokens(request: Request, env: Env) -> dict[str, object]:
    query = request.query_params
    status = query.get("filter[status]")
    if status is not None and status not in ("WAITING", "COMPLETED", "TIMED_OUT"):
        raise EngineError("filter[status] must be WAITING, COMPLETED or TIMED_OUT")
    tags = [t for t in query.get("filter[tags]", "").split(",") if t] or None
    try:
        limit = int(query.get("page[size]", "25"))
    except ValueError:
        raise EngineError("page[size] must be an integer between 1 and 100") from None
    if not 1 <= limit <= 100:
        raise EngineError("page[size] must be an integer between 1 and 100")
    after = None
    if cursor := query.get("page[after]"):
        row = await engine_of(request).retrieve_waitpoint(env, cursor)
        after = (row["created_at"], row["id"])
    rows = await engine_of(request).list_tokens(env,
        status=status,
        idempotency_key=query.get("filter[idempotencyKey]"),
        tags=tags,
        after=after,
        limit=limit + 1,
    )
    page = rows[:limit]
    base = str(request.base_url).rstrip("/")
    pool = engine_of(request).pool
    data = [
        present_token(r, await waitpoints.callback_url(pool, env, base, r["id"])) for r in page
    ]
    pagination: dict[str, str] = {}  # "next" is absent on the last page (not null)
    if len(rows) > limit:
        pagination["next"] = page[-1]["id"]
    return {"data": data, "pagination": pagination}


@router.get("/api/v1/waitpoints/tokens/{waitpoint_id}")
async def retrieve_token(waitpoint_id: str, request: Request, env: Env) -> dict[str, object]:
    row = await engine_of(request).retrieve_waitpoint(env, waitpoint_id)
    if row["type"] != "TOKEN":
        raise NotFound(f"waitpoint token {waitpoint_id!r} not found in this environment")
    base = str(request.base_url).rstrip("/")
    url = await engine_of(request).callback_url(env, base, row["id"])
    return present_token(row, url)


@router.post("/api/v1/waitpoints/tokens/{waitpoint_id}/complete")
async def complete_token(waitpoint_id: str, request: Request, who: Who) -> dict[str, object]:
    """With the secret key, or a public token scoped ``write:waitpoints:<id>`` (browsers)."""
    who.require(f"write:waitpoints:{waitpoint_id}", "write:waitpoints")
    body = await read_model(request, CompleteToken)
    output, output_type = _encode_output(body.data)
    await engine_of(request).complete_token(who.env, waitpoint_id, output, output_type
    )
    return {"success": True}


@router.post("/api/v1/waitpoints/tokens/{waitpoint_id}/callback/{digest}")
async def token_callback(waitpoint_id: str, digest: str, request: Request) -> Any:
    """The token's callback URL: no key, the HMAC in the path is the credential. The whole
    JSON body (or ``{}``) becomes the output; calling it again is harmless."""
    from fastapi.responses import JSONResponse

    try:
        env = await engine_of(request).verify_callback(waitpoint_id, digest)
    except PermissionError:
        return JSONResponse({"error": "invalid callback URL signature"}, status_code=401)
    raw = await read_body(request)
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge("callback body is too large")
    data = await read_json(request) if raw else {}
    output, output_type = _encode_output(data)
    await engine_of(request).complete_token(env, waitpoint_id, output, output_type)
    return {"success": True}


# --- the run side -------------------------------------------------------------------------------


class WaitBody(BaseModel):
    seq: int = Field(ge=0)
    kind: str = Field(min_length=1, max_length=64)
    #: the lease holder (ctx.worker.instance_id): a wait is fenced on the lease
    instance_id: str = Field(min_length=1, max_length=64)
    #: the attempt doing the operation: refused once it has ended (journals are per attempt)
    attempt_number: int | None = Field(default=None, ge=1)
    waitpoint_id: str | None = None
    #: DURATION waits: when the wait ends (ISO timestamp or duration from now)
    until: str | int | float | datetime | None = None
    idempotency_key: str | None = Field(default=None, max_length=2048)
    idempotency_key_ttl: str | int | None = None

    @field_validator("idempotency_key_ttl")
    @classmethod
    def _ttl(cls, value: str | int | None) -> str | int | None:
        if value is not None:
            parse_duration(value, "idempotency_key_ttl")  # refused here, not at insert
        return value


class JournalBody(BaseModel):
    seq: int = Field(ge=0)
    kind: str = Field(min_length=1, max_length=64)
    key: str | None = Field(default=None, max_length=512)
    outcome: Any = None
    #: the lease holder (ctx.worker.instance_id): a journal entry is fenced on the lease
    instance_id: str = Field(min_length=1, max_length=64)
    attempt_number: int | None = Field(default=None, ge=1)


class CheckpointBody(BaseModel):
    instance_id: str
    attempt_number: int = Field(ge=1)
    #: execution time the attempt has used so far (waits excluded): the resume carries it
    execution_ms: int | None = Field(default=None, ge=0)


@router.post("/engine/v1/runs/{run_id}/wait")
async def wait(run_id: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, WaitBody)
    if (body.until is None) == (body.waitpoint_id is None):
        raise EngineError("give either waitpoint_id (an existing waitpoint) or until (a duration)")
    until = None
    if body.until is not None:
        try:
            until = parse_when(body.until, "until")
        except ValueError as exc:
            raise EngineError(str(exc)) from None
    row = await engine_of(request).wait_for(env,
        run_id,
        body.instance_id,
        body.seq,
        body.kind,
        waitpoint_id=body.waitpoint_id,
        until=until,
        idempotency_key=body.idempotency_key,
        idempotency_key_ttl=body.idempotency_key_ttl,
        attempt_number=body.attempt_number,
    )
    return present_waitpoint(row)


@router.get("/engine/v1/waitpoints/{waitpoint_id}/wait")
async def wait_for_waitpoint(waitpoint_id: str, request: Request, env: Env) -> dict[str, object]:
    try:
        timeout_ms = int(request.query_params.get("timeout_ms", "10000"))
    except ValueError:
        raise EngineError("timeout_ms must be an integer") from None
    async with api_state(request).caps.poll(env.id):
        row = await engine_of(request).wait_until_done(env, waitpoint_id, timeout_ms / 1000)
    return present_waitpoint(row)


@router.post("/engine/v1/runs/{run_id}/journal")
async def journal(run_id: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, JournalBody)
    entry = await engine_of(request).record_outcome(env,
        run_id,
        body.instance_id,
        body.seq,
        body.kind,
        body.key,
        body.outcome,
        body.attempt_number,
    )
    return {"seq": entry["seq"], "kind": entry["kind"], "key": entry["key"]}


@router.post("/engine/v1/runs/{run_id}/checkpoint")
async def checkpoint(run_id: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, CheckpointBody)
    suspended = await engine_of(request).checkpoint(
        env, run_id, body.instance_id, body.attempt_number,
        execution_ms=body.execution_ms,
    )
    if suspended:
        metrics.CHECKPOINTS.inc()
    return {"suspended": suspended}
