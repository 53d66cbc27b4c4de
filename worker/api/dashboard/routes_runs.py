"""Runs: the live list with filters and bulk actions, a run's page and its actions, and the
server-sent events that keep both live."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

import orjson
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from worker.api.dashboard import run_view
from worker.api.dashboard.web import PREFIX, CsrfDep, EnvDep, Page, SessionDep, back_to, render
from worker.api.state import engine_of
from worker.common.statuses import API_STATUS, INTERNAL_STATUSES
from worker.engine import runs
from worker.engine.errors import EngineError, NotFound
from worker.engine.models import TriggerBody, TriggerOptions, parse_when
from worker.engine.realtime import RESYNC, RunChange
from worker.engine.triggering import trigger

router = APIRouter(prefix=PREFIX + "/{project}/{env}", include_in_schema=False)
PAGE_SIZE = 50
FILTERS = ("status", "task", "tag", "version", "queue", "batch", "from", "to", "after")


def _csv(value: str | None) -> list[str] | None:
    items = [v.strip() for v in (value or "").split(",") if v.strip()]
    return items or None


def _time(name: str, value: str | None) -> datetime | None:
    """An ISO-8601 time (a form's datetime-local, read as UTC when it has no zone)."""
    if not value:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise EngineError(f"{name} must be a date and time like 2025-01-31T12:00") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@router.get("/runs")
async def list_page(request: Request, session: SessionDep, env: EnvDep) -> Response:
    query = request.query_params
    page = Page(session, env, "runs")
    if search := (query.get("id") or "").strip():
        with contextlib.suppress(NotFound):
            await engine_of(request).retrieve_run(env, search)
            return RedirectResponse(f"{page.base}/runs/{search}", status_code=303)
        return back_to(f"{page.base}/runs", error=f"No run {search!r} in this environment.")
    filters = {k: query.get(k, "") for k in FILTERS}
    statuses = None
    if wanted := _csv(filters["status"]):
        unknown = [s for s in wanted if s not in INTERNAL_STATUSES]
        if unknown:
            raise EngineError(f"unknown status {unknown}; one of {sorted(INTERNAL_STATUSES)}")
        statuses = [internal for s in wanted for internal in INTERNAL_STATUSES[s]]
    after = None
    if filters["after"]:
        row = await engine_of(request).retrieve_run(env, filters["after"])
        after = (row["created_at"], row["id"])
    rows = await engine_of(request).list_runs(env,
        statuses=statuses,
        task_ids=_csv(filters["task"]),
        tags=_csv(filters["tag"]),
        versions=_csv(filters["version"]),
        queues=_csv(filters["queue"]),
        batch_id=filters["batch"] or None,
        created_from=_time("from", filters["from"]),
        created_to=_time("to", filters["to"]),
        after=after,
        limit=PAGE_SIZE + 1,
    )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    next_query = {k: v for k, v in filters.items() if v and k != "after"}
    if more:
        next_query["after"] = rows[-1]["id"]
    return render(
        "runs.html",
        page,
        runs=rows,
        filters=filters,
        statuses=sorted(INTERNAL_STATUSES),
        next_query=next_query if more else None,
        notice=query.get("notice"),
        error=query.get("error"),
    )


@router.post("/runs/bulk")
async def bulk(
    request: Request,
    _: CsrfDep,
    env: EnvDep,
    action: Annotated[str, Form()],
    run_ids: Annotated[list[str] | None, Form()] = None,
) -> Response:
    base = f"{PREFIX}/{env.project_ref}/{env.slug}/runs"
    if not run_ids:
        return back_to(base, error="Select at least one run.")
    pool = engine_of(request).pool
    if action == "cancel":
        done = [run_id for run_id in run_ids if await runs.cancel(pool, env, run_id)]
        return back_to(base, notice=f"Canceled {len(done)} of {len(run_ids)} runs.")
    if action == "replay":
        new = [(await runs.replay(pool, env, run_id))["id"] for run_id in run_ids]
        return back_to(base, notice=f"Replayed {len(new)} runs: {', '.join(new)}.")
    return back_to(base, error=f"Unknown action {action!r}.")


@router.get("/runs/{run_id}")
async def run_page(
    request: Request, run_id: str, session: SessionDep, env: EnvDep
) -> HTMLResponse:
    pool = engine_of(request).pool
    query = request.query_params
    detail = await run_view.load(pool, env, run_id, query.get("level"), query.get("q"))
    return render(
        "run.html",
        Page(session, env, "runs"),
        d=detail,
        level=query.get("level") or "",
        q=query.get("q") or "",
        notice=query.get("notice"),
        error=query.get("error"),
    )


@router.post("/runs/{run_id}/cancel")
async def cancel(request: Request, run_id: str, _: CsrfDep, env: EnvDep) -> Response:
    here = f"{PREFIX}/{env.project_ref}/{env.slug}/runs/{run_id}"
    canceled = await engine_of(request).cancel_run(env, run_id)
    if not canceled:
        return back_to(here, error="The run had already finished.")
    return back_to(here, notice=f"Canceled {len(canceled)} run(s).")


@router.post("/runs/{run_id}/replay")
async def replay(
    request: Request,
    run_id: str,
    _: CsrfDep,
    env: EnvDep,
    payload: Annotated[str | None, Form()] = None,
) -> Response:
    pool = engine_of(request).pool
    base = f"{PREFIX}/{env.project_ref}/{env.slug}/runs"
    original = await runs.retrieve(pool, env, run_id)
    if payload is None or not payload.strip():
        new = await runs.replay(pool, env, run_id)
    else:
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            return back_to(f"{base}/{run_id}", error=f"The payload is not JSON: {exc}")
        options = TriggerOptions(tags=original["tags"], metadata=original["seed_metadata"])
        body = TriggerBody(payload=value, options=options)
        new = await trigger(pool, env, original["task_id"], body, replayed_from=run_id)
    return back_to(f"{base}/{new['id']}", notice=f"Replay of {run_id}.")


@router.post("/runs/{run_id}/reschedule")
async def reschedule(
    request: Request, run_id: str, _: CsrfDep, env: EnvDep, delay: Annotated[str, Form()]
) -> Response:
    here = f"{PREFIX}/{env.project_ref}/{env.slug}/runs/{run_id}"
    try:
        run_at = parse_when(delay.strip(), "delay")
    except ValueError as exc:
        return back_to(here, error=str(exc))
    await engine_of(request).reschedule_run(env, run_id, run_at)
    return back_to(here, notice=f"Rescheduled to {run_at.isoformat()}.")


@router.get("/events")
async def events(request: Request, _: SessionDep, env: EnvDep) -> StreamingResponse:
    """Run changes of this environment as SSE: ``{"id", "status"}`` per change; a ``resync``
    event when changes may have been missed. The pages re-read what they show."""
    hub = engine_of(request).realtime
    sub = await hub.subscribe(env.id)

    async def stream() -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            while not await request.is_disconnected():
                try:
                    change = await asyncio.wait_for(sub.queue.get(), timeout=15)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if change is RESYNC:
                    yield b"event: resync\ndata: {}\n\n"
                elif isinstance(change, RunChange):
                    data = {"id": change.run_id, "status": API_STATUS.get(change.status)}
                    yield b"data: " + orjson.dumps(data) + b"\n\n"
        finally:
            hub.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream")



@router.get("")
@router.get("/")
async def environment_home(_: SessionDep, env: EnvDep) -> Response:
    return RedirectResponse(f"{PREFIX}/{env.project_ref}/{env.slug}/runs", status_code=303)
