"""API keys and worker tokens of the caller's environment (``/api/v1/keys``; shapes in
docs/api.md, "Keys"), and rotation of its public-token signing secret. Needs a secret key."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.api.state import engine_of
from worker.engine import keys
from worker.engine.errors import EngineError
from worker.engine.keys import ApiKey, CreatedKey, Environment
from worker.engine.models import parse_duration

router = APIRouter(prefix="/api/v1/keys")
Env = Annotated[Environment, Depends(authenticate)]


class CreateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="default", min_length=1, max_length=100)
    type: Literal["secret", "worker"] = "secret"


class RotateBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    #: how long the old key keeps working: "1h", "30m", seconds; default 24 h, at most 30 days
    grace_period: str | int | float | None = Field(default=None, alias="gracePeriod")


def present(key: ApiKey) -> dict[str, object]:
    return {
        "id": key.id,
        "name": key.name,
        "type": key.kind,
        "prefix": key.prefix,
        "status": key.status,
        "createdAt": key.created_at,
        "lastUsedAt": key.last_used_at,
        "expiresAt": key.expires_at,
        "revokedAt": key.revoked_at,
    }


def _present_created(created: CreatedKey) -> dict[str, object]:
    return {**present(created.key), "key": created.plaintext}


def _grace_seconds(value: str | int | float | None) -> float:
    if value is None:
        return keys.DEFAULT_GRACE_SECONDS
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(value, "gracePeriod").total_seconds()
    except ValueError as exc:
        raise EngineError(f"gracePeriod {value!r} is not a duration ('1h', '30m', seconds): "
                          f"{exc}") from None


@router.get("")
async def list_keys(request: Request, env: Env) -> dict[str, object]:
    """``?includeRevoked=true`` also lists revoked and expired keys."""
    include = request.query_params.get("includeRevoked", "false").lower() == "true"
    found = await engine_of(request).list_api_keys(env, include)
    return {"data": [present(k) for k in found]}


@router.post("", status_code=201)
async def create_key(request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, CreateBody)
    created = await engine_of(request).create_api_key(env, body.name, body.type)
    return _present_created(created)


@router.delete("/{key_id}")
async def revoke_key(key_id: str, request: Request, env: Env) -> dict[str, object]:
    revoked = await engine_of(request).revoke_api_key(env, key_id)
    return present(revoked)


# before /{key_id}/rotate, which would take "signing-secret" for a key id
@router.post("/signing-secret/rotate")
async def rotate_signing_secret(request: Request, env: Env) -> dict[str, object]:
    done = await engine_of(request).rotate_signing_secret(env)
    return {"rotatedAt": done.rotated_at, "previousValidUntil": done.previous_valid_until}


@router.post("/{key_id}/rotate", status_code=201)
async def rotate_key(key_id: str, request: Request, env: Env) -> dict[str, object]:
    """Body optional: ``{"gracePeriod": "1h"}``."""
    has_body = request.headers.get("content-length", "0") != "0"
    body = await read_model(request, RotateBody) if has_body else RotateBody()
    grace = _grace_seconds(body.grace_period)
    rotated = await engine_of(request).rotate_api_key(env, key_id, grace)
    return {**_present_created(rotated.created), "previous": present(rotated.previous)}
