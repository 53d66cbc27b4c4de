"""Schedules REST API (Trigger.dev paths): CRUD, activate/deactivate, timezones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.api.schedule_shapes import ScheduleBody, present, present_page
from worker.api.state import engine_of
from worker.engine.cron import timezones
from worker.engine.errors import EngineError
from worker.engine.keys import Environment

router = APIRouter(prefix="/api/v1")
Env = Annotated[Environment, Depends(authenticate)]


@router.post("/schedules")
async def create_schedule(request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, ScheduleBody)
    return present(await engine_of(request).create_schedule(env, body.spec()))


@router.get("/schedules")
async def list_schedules(request: Request, env: Env) -> dict[str, object]:
    query = request.query_params
    try:
        page = int(query.get("page", "1"))
        per_page = int(query.get("perPage", "10"))
    except ValueError:
        raise EngineError("page and perPage must be integers") from None
    return present_page(
        await engine_of(request).list_schedules(env, page, per_page, query.get("task")))


@router.get("/schedules/{schedule_id}")
async def retrieve_schedule(schedule_id: str, request: Request, env: Env) -> dict[str, object]:
    return present(await engine_of(request).retrieve_schedule(env, schedule_id))


@router.put("/schedules/{schedule_id}")
async def update_schedule(schedule_id: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, ScheduleBody)
    return present(await engine_of(request).update_schedule(env, schedule_id, body.spec()))


@router.delete("/schedules/{schedule_id}")
async def delete_schedule(schedule_id: str, request: Request, env: Env) -> dict[str, object]:
    return present(await engine_of(request).delete_schedule(env, schedule_id))


@router.post("/schedules/{schedule_id}/activate")
async def activate_schedule(schedule_id: str, request: Request, env: Env) -> dict[str, object]:
    return present(await engine_of(request).set_schedule_active(env, schedule_id, True))


@router.post("/schedules/{schedule_id}/deactivate")
async def deactivate_schedule(schedule_id: str, request: Request, env: Env) -> dict[str, object]:
    return present(await engine_of(request).set_schedule_active(env, schedule_id, False))


@router.get("/timezones")
async def list_timezones(request: Request) -> dict[str, object]:
    """Public, as in Trigger.dev (its SDK sends no key): the IANA names are no secret."""
    exclude = request.query_params.get("excludeUtc", "false").lower() == "true"
    return {"timezones": timezones(exclude_utc=exclude)}
