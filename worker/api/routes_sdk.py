"""Endpoints behind SDK twins of Trigger.dev v4 (issue 20): run tags added from inside a run,
who may trigger (the secret key, or a public token scoped ``trigger:tasks:<id>``), alert
channels, deployments (``trigger deploy``), ``whoami``. Shapes in docs/api.md.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from worker.api.auth import AuthError, authenticate
from worker.api.bodies import read_json, read_model
from worker.api.routes_realtime import principal
from worker.api.state import engine_of
from worker.engine import alerts, run_tags
from worker.engine.errors import EngineError, Forbidden
from worker.engine.keys import Environment
from worker.engine.public_tokens import InvalidToken, Principal

router = APIRouter()
Auth = Annotated[Principal, Depends(principal)]
Env = Annotated[Environment, Depends(authenticate)]


async def trigger_permission(request: Request, who: Principal, task_ids: str | list[str],
                             batch: bool = False, options: tuple[Any, ...] = ()) -> Environment:
    """The environment to trigger in: the secret key may trigger anything; a public token only
    the tasks its ``trigger:tasks[:<id>]`` scopes name (``batchTrigger:`` for batches), and a
    one-time token once. A public token never links the new runs to a parent (``options``:
    the request's trigger/batch options): that would let a browser block or resume, or write
    into the journal of, a run it cannot even read."""
    if who.scopes is not None:
        for opts in options:
            if (getattr(opts, "parent_run_id", None) is not None
                    or getattr(opts, "resume_parent_on_completion", False)
                    or getattr(opts, "journal_seq", None) is not None):
                raise Forbidden("a public access token cannot set parentRunId, "
                                "resumeParentOnCompletion or journalSeq")
        action = "batchTrigger" if batch else "trigger"
        for task_id in [task_ids] if isinstance(task_ids, str) else sorted(set(task_ids)):
            who.require(f"{action}:tasks:{task_id}", f"{action}:tasks")
        try:
            await engine_of(request).spend_public_token(who)
        except InvalidToken as exc:
            raise AuthError(str(exc)) from None
    return who.env


@router.post("/api/v1/runs/{run_id}/tags")
async def add_run_tags(run_id: str, request: Request, who: Auth) -> dict[str, object]:
    """Body ``{"tags": ["a", "b"]}`` → ``{"tags": [every tag of the run]}``."""
    if who.scopes is not None:
        who.require(f"write:runs:{run_id}", "write:runs")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise EngineError('body must be {"tags": ["tag", ...]}')
    tags = run_tags.check_tags(body.get("tags"))
    return {"tags": await engine_of(request).add_tags(who.env, run_id, tags)}


@router.get("/api/v1/whoami")
async def whoami(env: Env) -> dict[str, object]:
    return {"project": {"id": env.project_id, "ref": env.project_ref},
            "environment": {"id": env.id, "slug": env.slug, "type": env.type}}


@router.post("/api/v1/alerts")
async def create_alert_channel(request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, alerts.ChannelBody)
    return (await engine_of(request).create_alert_channel(env, body)).public()


@router.get("/api/v1/alerts")
async def list_alert_channels(request: Request, env: Env) -> dict[str, object]:
    return {"data": [c.public() for c in await engine_of(request).list_alert_channels(env)]}


@router.delete("/api/v1/alerts/{channel_id}")
async def delete_alert_channel(channel_id: str, request: Request, env: Env) -> dict[str, object]:
    await engine_of(request).delete_alert_channel(env, channel_id)
    return {"id": channel_id, "deleted": True}


class DeploymentBody(BaseModel):
    content_hash: str = Field(alias="contentHash", min_length=1, max_length=128)
    tasks: list[dict[str, Any]] = Field(min_length=1)
    image: str | None = Field(default=None, max_length=500)


@router.post("/api/v1/deployments")
async def register_deployment(request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, DeploymentBody)
    return await engine_of(request).register_deployment(env, body.content_hash,
                                      body.tasks, body.image)


@router.get("/api/v1/deployments/{deployment_id}")
async def retrieve_deployment(deployment_id: str, request: Request, env: Env) -> dict[str, object]:
    return await engine_of(request).retrieve_deployment(env, deployment_id)


@router.post("/api/v1/deployments/{deployment_id}/promote")
async def promote_deployment(deployment_id: str, request: Request, env: Env) -> dict[str, object]:
    return await engine_of(request).promote_deployment(env, deployment_id)
