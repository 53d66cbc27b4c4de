"""Endpoints behind SDK twins of Trigger.dev v4 (issue 20): run tags added from inside a run,
and who may trigger (the secret key, or a public token scoped ``trigger:tasks:<id>``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from worker.api.auth import AuthError
from worker.api.bodies import read_json
from worker.api.routes_realtime import principal
from worker.engine import public_tokens, run_tags
from worker.engine.errors import EngineError
from worker.engine.keys import Environment
from worker.engine.public_tokens import InvalidToken, Principal

router = APIRouter()
Auth = Annotated[Principal, Depends(principal)]


async def trigger_permission(request: Request, who: Principal, task_id: str) -> Environment:
    """The environment to trigger ``task_id`` in: the secret key may trigger anything; a public
    token only the tasks its ``trigger:tasks[:<id>]`` scopes name, and a one-time token once."""
    if who.scopes is not None:
        who.require(f"trigger:tasks:{task_id}", "trigger:tasks")
        try:
            await public_tokens.spend(request.app.state.pool, who)
        except InvalidToken as exc:
            raise AuthError(str(exc)) from None
    return who.env


@router.post("/api/v1/runs/{run_id}/tags")
async def add_run_tags(run_id: str, request: Request, who: Auth) -> dict[str, Any]:
    """Body ``{"tags": ["a", "b"]}`` → ``{"tags": [every tag of the run]}``."""
    if who.scopes is not None:
        who.require(f"write:runs:{run_id}", "write:runs")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise EngineError('body must be {"tags": ["tag", ...]}')
    tags = run_tags.check_tags(body.get("tags"))
    return {"tags": await run_tags.add_tags(request.app.state.pool, who.env, run_id, tags)}
