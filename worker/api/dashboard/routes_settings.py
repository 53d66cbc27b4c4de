"""Schedules (list, create, edit, activate / deactivate, delete) and API keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from worker.api.dashboard.cron_words import describe
from worker.api.dashboard.web import PREFIX, CsrfDep, EnvDep, Page, SessionDep, back_to, render
from worker.api.schedule_shapes import ScheduleBody, present
from worker.api.state import engine_of
from worker.engine import keys, schedules
from worker.engine.cron import parse
from worker.engine.errors import EngineError
from worker.engine.keys import CreatedKey

router = APIRouter(prefix=PREFIX + "/{project}/{env}", include_in_schema=False)


@router.get("/schedules")
async def schedules_page(request: Request, session: SessionDep, env: EnvDep) -> HTMLResponse:
    listed = await engine_of(request).list_schedules(env, 1, 100)
    now = datetime.now(UTC)
    rows = [{**present(schedule, now), "words": describe(schedule.cron),
             "next_five": parse(schedule.cron).upcoming(now, schedule.timezone, 5)}
            for schedule in listed.schedules]
    editing = request.query_params.get("edit")
    return render(
        "schedules.html",
        Page(session, env, "schedules"),
        schedules=rows,
        editing=next((r for r in rows if r["id"] == editing), None),
        notice=request.query_params.get("notice"),
        error=request.query_params.get("error"),
    )


def _body(task: str, cron: str, timezone: str, dedup: str) -> ScheduleBody:
    return ScheduleBody(
        task=task.strip(),
        cron=cron.strip(),
        timezone=timezone.strip() or "UTC",
        # the API requires a key (it makes creating idempotent); a form may leave it empty
        deduplication_key=dedup.strip() or f"dashboard-{uuid.uuid4().hex[:12]}",
    )


@router.post("/schedules")
async def save_schedule(
    request: Request,
    _: CsrfDep,
    env: EnvDep,
    task: Annotated[str, Form()],
    cron: Annotated[str, Form()],
    timezone: Annotated[str, Form()] = "UTC",
    deduplication_key: Annotated[str, Form()] = "",
    schedule_id: Annotated[str, Form()] = "",
) -> Response:
    here = f"{PREFIX}/{env.project_ref}/{env.slug}/schedules"
    pool = engine_of(request).pool
    try:
        body = _body(task, cron, timezone, deduplication_key)
        if schedule_id:
            await schedules.update(pool, env, schedule_id, body.spec())
            return back_to(here, notice=f"Saved {schedule_id}.")
        created = await schedules.create(pool, env, body.spec())
    except ValidationError as exc:
        return back_to(here, error="; ".join(e["msg"] for e in exc.errors()))
    except EngineError as exc:
        return back_to(here, error=exc.message)
    return back_to(here, notice=f"Created {created.id}.")


@router.post("/schedules/{schedule_id}/{action}")
async def schedule_action(
    request: Request, schedule_id: str, action: str, _: CsrfDep, env: EnvDep
) -> Response:
    here = f"{PREFIX}/{env.project_ref}/{env.slug}/schedules"
    pool = engine_of(request).pool
    try:
        if action in ("activate", "deactivate"):
            await schedules.set_active(pool, env, schedule_id, action == "activate")
        elif action == "delete":
            await schedules.delete(pool, env, schedule_id)
        else:
            return back_to(here, error=f"Unknown action {action!r}.")
    except EngineError as exc:
        return back_to(here, error=exc.message)
    return back_to(here, notice=f"{action.capitalize()}d {schedule_id}.")


@router.get("/keys")
async def keys_page(request: Request, session: SessionDep, env: EnvDep) -> HTMLResponse:
    return await _keys(request, Page(session, env, "keys"))


async def _keys(
    request: Request, page: Page, created: CreatedKey | None = None, error: str | None = None
) -> HTMLResponse:
    async with engine_of(request).pool.connection() as conn:
        listed = await keys.list_keys(conn, page.env.id, include_revoked=True)
    return render(
        "keys.html",
        page,
        keys=listed,
        created=created,
        notice=request.query_params.get("notice"),
        error=error or request.query_params.get("error"),
    )


@router.post("/keys")
async def create_key(
    request: Request,
    session: CsrfDep,
    env: EnvDep,
    name: Annotated[str, Form()] = "dashboard",
    kind: Annotated[str, Form()] = "secret",
) -> HTMLResponse:
    """The new key is shown in this response only (no redirect: it must not be in a URL)."""
    page = Page(session, env, "keys")
    try:
        async with engine_of(request).pool.connection() as conn, conn.transaction():
            created = await keys.create_key(conn, env, name, kind)
    except EngineError as exc:
        return await _keys(request, page, error=exc.message)
    return await _keys(request, page, created=created)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, _: CsrfDep, env: EnvDep) -> Response:
    here = f"{PREFIX}/{env.project_ref}/{env.slug}/keys"
    try:
        async with engine_of(request).pool.connection() as conn, conn.transaction():
            revoked = await keys.revoke_key(conn, env.id, key_id)
    except EngineError as exc:
        return back_to(here, error=exc.message)
    return back_to(here, notice=f"Revoked {revoked.name} ({revoked.prefix}…).")
