"""The worker protocol (docs/protocol.md): register, dequeue, heartbeat, complete, release, logs."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.engine import env_vars, leases, metrics
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


class RunIdsBody(BaseModel):
    instance_id: uuid.UUID
    run_ids: list[str] = Field(max_length=10_000)


class HeartbeatBody(RunIdsBody):
    #: the worker is shutting down: it serves no version from now on
    stopping: bool = False


class CompleteBody(BaseModel):
    instance_id: uuid.UUID
    completions: list[Any] = Field(max_length=1000)  # an item that is not an object: refused


class LogsBody(BaseModel):
    logs: list[Any] = Field(max_length=10_000)  # a line that is not an object is skipped


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
    )
    await _with_env_vars(state.pool, env, runs)
    metrics.observe_dequeued(runs)
    return {"runs": runs}


async def _with_env_vars(pool: Any, env: Environment, runs: list[dict[str, Any]]) -> None:
    """The environment's variables (routes_envvars) on each leased run: its executor sets them
    for that run only."""
    if runs:
        variables = await env_vars.for_runs(pool, env)
        if variables:
            for run in runs:
                run["env_vars"] = variables


@router.post("/heartbeat")
async def heartbeat(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, HeartbeatBody)
    state = request.app.state
    return await leases.heartbeat(state.pool, state.lease, env, str(body.instance_id), body.run_ids,
                                  stopping=body.stopping)


@router.post("/complete")
async def complete(request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, CompleteBody, max_depth=None)  # checked item by item
    state = request.app.state
    results = await leases.complete(
        state.pool, env, str(body.instance_id), body.completions, state.lease.lease_seconds
    )
    by_id = {c.get("run_id"): c for c in body.completions if isinstance(c, dict)}
    for result in results:
        if result.get("outcome") != "LEASE_LOST":
            metrics.COMPLETIONS.labels(
                outcome=metrics.completion_outcome(by_id.get(result.get("run_id")) or {},
                                                   result)).inc()
    # an attempt retried in place starts from the result's "next" message, a leased run too
    await _with_env_vars(state.pool, env, [r["next"] for r in results if r.get("next")])
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
    body = await read_model(request, LogsBody, max_depth=None)  # sanitised line by line
    return {"stored": await leases.store_logs(request.app.state.pool, env, body.logs)}
