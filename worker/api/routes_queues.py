"""Queue management: ``/api/v1/queues`` (Trigger.dev's paths; ``?type=task`` names a task's
default queue by the task id)."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.api.state import engine_of
from worker.engine.db import Row
from worker.engine.errors import EngineError
from worker.engine.keys import Environment

router = APIRouter(prefix="/api/v1/queues")
Env = Annotated[Environment, Depends(authenticate)]


def _name(name: str, kind: str | None) -> str:
    """The queue's full name. Trigger.dev's SDK encodes a ``/`` in a name twice (``%252F``)
    and says what the name is with ``type``: ``task`` (a task id), ``custom``, or ``id``."""
    name = unquote(name)
    return f"task/{name}" if kind == "task" and not name.startswith("task/") else name


def _sdk(queue: Row) -> dict[str, object]:
    """Trigger.dev's ``QueueItem``: a task queue is named by its task id; when the override
    was made is not tracked (null)."""
    if queue["type"] == "task":
        queue["name"] = queue["name"].removeprefix("task/")
    queue["concurrency"].update(overriddenAt=None, overriddenBy=None)
    return queue


class PauseBody(BaseModel):
    action: Literal["pause", "resume"]
    type: Literal["task", "custom", "id"] | None = None


class OverrideBody(BaseModel):
    concurrency_limit: int = Field(alias="concurrencyLimit", ge=0, le=100_000)
    type: Literal["task", "custom", "id"] | None = None


class ResetBody(BaseModel):
    type: Literal["task", "custom", "id"] | None = None


def _int(request: Request, name: str, default: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        raise EngineError(f"{name} must be a positive integer") from None
    if value < 1:
        raise EngineError(f"{name} must be a positive integer")
    return value


@router.get("")
async def list_queues(request: Request, env: Env) -> dict[str, object]:
    """``?page=1&perPage=25`` (the whole list when neither is given)."""
    found = await engine_of(request).list_queues(env)
    page = _int(request, "page", 1)
    per_page = _int(request, "perPage", max(len(found), 1))
    items = found[(page - 1) * per_page : page * per_page]
    return {
        "data": [_sdk(q) for q in items],
        "pagination": {
            "currentPage": page,
            "totalPages": max(1, -(-len(found) // per_page)),
            "count": len(found),
        },
    }


@router.post("/{name:path}/pause")
async def pause(name: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, PauseBody)
    queue = _name(name, body.type or request.query_params.get("type"))
    await engine_of(request).pause_queue(env, queue, body.action == "pause")
    return _sdk(await engine_of(request).retrieve_queue(env, queue))


@router.post("/{name:path}/concurrency/override")
async def override(name: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, OverrideBody)
    queue = _name(name, body.type or request.query_params.get("type"))
    await engine_of(request).override_queue_limit(env, queue, body.concurrency_limit)
    return _sdk(await engine_of(request).retrieve_queue(env, queue))


@router.post("/{name:path}/concurrency/reset")
async def reset(name: str, request: Request, env: Env) -> dict[str, object]:
    kind = request.query_params.get("type")
    if await request.body():
        kind = (await read_model(request, ResetBody)).type or kind
    queue = _name(name, kind)
    await engine_of(request).override_queue_limit(env, queue, None)
    return _sdk(await engine_of(request).retrieve_queue(env, queue))


@router.get("/{name:path}")
async def retrieve(name: str, request: Request, env: Env) -> dict[str, object]:
    queue = _name(name, request.query_params.get("type"))
    return _sdk(await engine_of(request).retrieve_queue(env, queue))
