"""The worker protocol (docs/protocol.md): register, dequeue, heartbeat, complete, release, logs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.engine import leases
from worker.engine.keys import Environment

router = APIRouter(prefix="/engine/v1/worker")
Env = Annotated[Environment, Depends(authenticate)]


class RegisterBody(BaseModel):
    instance_id: uuid.UUID
    content_hash: str = Field(min_length=1, max_length=128)
    tasks: list[dict[str, Any]]
    metadata: dict[str, Any] = Field(default_factory=dict)


class DequeueBody(BaseModel):
    instance_id: uuid.UUID
    versions: list[uuid.UUID] = Field(min_length=1)
    max_runs: int = Field(default=1, ge=1, le=100)
    wait_ms: int = Field(default=0, ge=0, le=30_000)
    #: versions this worker replaced by a hot reload: their runs move to versions[0]
    adopt: list[uuid.UUID] | None = Field(default=None, max_length=1000)


class RunIdsBody(BaseModel):
    instance_id: uuid.UUID
    run_ids: list[str] = Field(max_length=10_000)


class CompleteBody(BaseModel):
    instance_id: uuid.UUID
    completions: list[dict[str, Any]] = Field(max_length=1000)


class LogsBody(BaseModel):
    logs: list[dict[str, Any]] = Field(max_length=10_000)


@router.post("/register")
async def register(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, RegisterBody)
    state = request.app.state
    version = await leases.register(
        state.pool, env, str(body.instance_id), body.content_hash, body.tasks, body.metadata
    )
    return {
        **version,
        "environment": {"id": env.id, "slug": env.slug, "type": env.type},
        "project": {"id": env.project_id, "ref": env.project_ref},
        "lease_seconds": state.lease.lease_seconds,
        "heartbeat_seconds": state.lease.heartbeat_seconds,
    }


@router.post("/dequeue")
async def dequeue(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, DequeueBody)
    state = request.app.state
    runs = await leases.dequeue(
        state.pool,
        state.notifier,
        state.lease,
        env,
        str(body.instance_id),
        [str(v) for v in body.versions],
        body.max_runs,
        body.wait_ms,
        gone=request.is_disconnected,
        adopt=None if body.adopt is None else [str(v) for v in body.adopt],
    )
    return {"runs": runs}


@router.post("/heartbeat")
async def heartbeat(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, RunIdsBody)
    state = request.app.state
    return await leases.heartbeat(state.pool, state.lease, env, str(body.instance_id), body.run_ids)


@router.post("/complete")
async def complete(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, CompleteBody)
    state = request.app.state
    results = await leases.complete(
        state.pool, env, str(body.instance_id), body.completions, state.lease.lease_seconds
    )
    return {"results": results}


@router.post("/release")
async def release(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, RunIdsBody)
    released = await leases.release(
        request.app.state.pool, env, str(body.instance_id), body.run_ids
    )
    return {"released": released}


@router.post("/logs")
async def logs(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, LogsBody)
    return {"stored": await leases.store_logs(request.app.state.pool, env, body.logs)}
