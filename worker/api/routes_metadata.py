"""Run metadata REST API: ``GET``/``PUT /api/v1/runs/{id}/metadata`` (Trigger.dev paths)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from worker.api.bodies import read_json
from worker.api.routes_realtime import Auth, secret_key_only
from worker.api.state import engine_of
from worker.engine.errors import EngineError, Forbidden

router = APIRouter(prefix="/api/v1")


@router.get("/runs/{run_id}/metadata")
async def get_metadata(run_id: str, request: Request, who: Auth) -> dict[str, object]:
    row = await engine_of(request).retrieve_metadata(who.env, run_id)
    if not who.can_read_run(row):
        raise Forbidden(f"this public access token does not grant read:runs:{run_id}")
    return {"metadata": row["metadata"] or {}}


@router.put("/runs/{run_id}/metadata")
async def put_metadata(run_id: str, request: Request, who: Auth) -> dict[str, object]:
    """Body ``{metadata?, operations?, parentOperations?, rootOperations?}``; the new metadata
    of the run is returned."""
    secret_key_only(who, f"write:runs:{run_id}")
    body = await read_json(request)
    if not isinstance(body, dict):
        raise EngineError(
            "body must be an object: {metadata?, operations?, parentOperations?, rootOperations?}"
        )
    updated = await engine_of(request).update_metadata(who.env, run_id, body)
    return {"metadata": updated or {}}
