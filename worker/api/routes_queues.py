"""Queue management: ``/api/v1/queues`` (Trigger.dev's paths; ``?type=task`` names a task's
default queue by the task id)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.engine import queues
from worker.engine.keys import Environment

router = APIRouter(prefix="/api/v1/queues")
Env = Annotated[Environment, Depends(authenticate)]


def _name(name: str, request: Request) -> str:
    return f"task/{name}" if request.query_params.get("type") == "task" else name


class PauseBody(BaseModel):
    action: Literal["pause", "resume"]


class OverrideBody(BaseModel):
    concurrency_limit: int = Field(alias="concurrencyLimit", ge=0, le=100_000)


@router.get("")
async def list_queues(request: Request, env: Env) -> dict[str, Any]:
    return {"data": await queues.list_queues(request.app.state.pool, env)}


@router.post("/{name:path}/pause")
async def pause(name: str, request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, PauseBody)
    queue = _name(name, request)
    await queues.set_paused(request.app.state.pool, env, queue, body.action == "pause")
    return await queues.retrieve(request.app.state.pool, env, queue)


@router.post("/{name:path}/concurrency/override")
async def override(name: str, request: Request, env: Env) -> dict[str, Any]:
    body = await read_model(request, OverrideBody)
    queue = _name(name, request)
    await queues.override_limit(request.app.state.pool, env, queue, body.concurrency_limit)
    return await queues.retrieve(request.app.state.pool, env, queue)


@router.post("/{name:path}/concurrency/reset")
async def reset(name: str, request: Request, env: Env) -> dict[str, Any]:
    queue = _name(name, request)
    await queues.override_limit(request.app.state.pool, env, queue, None)
    return await queues.retrieve(request.app.state.pool, env, queue)


@router.get("/{name:path}")
async def retrieve(name: str, request: Request, env: Env) -> dict[str, Any]:
    return await queues.retrieve(request.app.state.pool, env, _name(name, request))
