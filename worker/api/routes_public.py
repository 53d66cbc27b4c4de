"""The public REST API: trigger, batch trigger, retrieve, list, cancel (Trigger.dev paths)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.datastructures import QueryParams

from worker.api.auth import authenticate
from worker.api.bodies import read_model
from worker.api.presenters import present_list_item, present_run
from worker.api.related_runs import related_runs
from worker.api.responses import json_response
from worker.api.routes_realtime import principal
from worker.api.routes_sdk import Auth, trigger_permission
from worker.api.run_bodies import BatchBody, TriggerBody
from worker.api.state import api_state, engine_of
from worker.common.statuses import INTERNAL_STATUSES
from worker.engine.db import Row
from worker.engine.errors import EngineError, Forbidden
from worker.engine.keys import Environment
from worker.engine.models import parse_duration, parse_when
from worker.engine.runs import MAX_WAIT_MS

router = APIRouter()
Env = Annotated[Environment, Depends(authenticate)]
REQUEST_KEY_HEADER = "x-trigger-request-idempotency-key"


def _request_key(request: Request) -> str | None:
    return request.headers.get(REQUEST_KEY_HEADER) or None


@router.post("/api/v1/tasks/{task_id}/trigger", response_model=dict[str, object])
async def trigger_task(task_id: str, request: Request, who: Auth) -> Response:
    body = await read_model(request, TriggerBody)
    key = request.headers.get("idempotency-key")
    if key and body.options.idempotency_key is None:
        body.options.idempotency_key = key
    spec = body.to_spec(task_id)
    env = await trigger_permission(request, who, task_id, parents=(spec.options.parent,))
    result = await engine_of(request).trigger(env, spec, _request_key(request))
    # a public access token for this run (read:runs:<id>), for a browser to subscribe with
    token = await engine_of(request).run_token(env, result["id"])
    return json_response(dict(result), headers={"x-trigger-jwt": token})


@router.post("/api/v1/tasks/{task_id}/batch", response_model=dict[str, object])
async def batch_trigger_task(task_id: str, request: Request, who: Auth) -> Response:
    batch = (await read_model(request, BatchBody)).to_spec(task_id)
    env = await trigger_permission(request, who, task_id, batch=True, parents=batch.parents())
    return json_response(dict(await engine_of(request).batch_trigger(
        env, batch, _request_key(request))))


@router.post("/api/v2/tasks/batch", response_model=dict[str, object])
async def batch_trigger(request: Request, who: Auth) -> Response:
    body = await read_model(request, BatchBody)
    missing = [i for i, item in enumerate(body.items) if not item.task]
    if missing:
        raise EngineError(f"items {missing} have no 'task': each item names the task to run")
    batch = body.to_spec()
    env = await trigger_permission(request, who, [item.task for item in batch.items], batch=True,
                                   parents=batch.parents())
    return json_response(dict(await engine_of(request).batch_trigger(
        env, batch, _request_key(request))))


@router.get("/api/v1/batches/{batch_id}")
async def retrieve_batch(batch_id: str, request: Request, env: Env) -> dict[str, object]:
    return await engine_of(request).retrieve_batch_runs(env, batch_id)


@router.get("/api/v3/runs/{run_id}", response_model=dict[str, object])
async def retrieve_run(run_id: str, request: Request) -> Response:
    """The secret key, or a public access token that may read this run (the ``x-trigger-jwt``
    of its trigger, or one made by ``auth.createPublicToken``)."""
    who = await principal(request)
    wait_ms = _wait_ms(request.query_params.get("waitMs"))

    def admit(row: Row) -> None:
        if not who.can_read_run(row):
            raise Forbidden(f"this public access token does not grant read:runs:{run_id}")

    engine = engine_of(request)
    if wait_ms:  # one read, then (not final yet) a wait woken by the run's change
        row = await engine.wait_run_final(
            who.env, run_id, wait_ms, children=True,
            admit=None if who.scopes is None else admit,  # a secret key reads every run
            # counted with the worker's dequeue long-polls: one cap per environment (429)
            slot=lambda: api_state(request).caps.poll(who.env.id))
    else:
        row = await engine.retrieve_run(who.env, run_id, children=True)
        admit(row)
    row["related_runs"] = await related_runs(engine_of(request).pool, who.env, row)
    return json_response(present_run(row))


def _wait_ms(value: str | None) -> int:
    """``waitMs`` (our extension, docs/api.md): answer once the run is final or after this
    many milliseconds; above the cap it waits the cap."""
    if value is None:
        return 0
    try:
        wait_ms = int(value)
    except ValueError:
        wait_ms = -1
    if wait_ms < 0:
        raise EngineError(f"waitMs must be a whole number of milliseconds (0 to "
                          f"{MAX_WAIT_MS}), not {value[:40]!r}")
    return min(wait_ms, MAX_WAIT_MS)


def _csv(value: str | None) -> list[str] | None:
    return [v for v in value.split(",") if v] if value else None


@router.get("/api/v1/runs")
async def list_runs(request: Request, env: Env) -> dict[str, object]:
    query = request.query_params
    statuses = None
    if api_statuses := _csv(query.get("filter[status]")):
        unknown = [s for s in api_statuses if s not in INTERNAL_STATUSES]
        if unknown:
            raise EngineError(f"unknown status {unknown}; one of {sorted(INTERNAL_STATUSES)}")
        statuses = [internal for s in api_statuses for internal in INTERNAL_STATUSES[s]]
    try:
        limit = int(query.get("page[size]", "25"))
    except ValueError:
        raise EngineError("page[size] must be an integer between 1 and 100") from None
    if not 1 <= limit <= 100:
        raise EngineError("page[size] must be an integer between 1 and 100")
    after = None
    cursor = query.get("page[after]")
    if cursor:
        after = await _cursor_of(request, env, cursor)
    created_from, created_to = _created_range(query)
    is_test = query.get("filter[isTest]")
    rows = await engine_of(request).list_runs(env,
        statuses=statuses,
        task_ids=_csv(query.get("filter[taskIdentifier]")),
        tags=_csv(query.get("filter[tag]")),
        batch_id=query.get("filter[batch]"),
        queues=_csv(query.get("filter[queue]")),
        versions=_csv(query.get("filter[version]")),
        is_test=None if is_test is None else is_test.lower() == "true",
        created_from=created_from,
        created_to=created_to,
        after=after,
        limit=limit + 1,
    )
    page = rows[:limit]
    pagination: dict[str, str] = {}  # "next" is absent on the last page (not null)
    if len(rows) > limit:
        pagination["next"] = page[-1]["id"]
    if cursor:
        pagination["previous"] = cursor
    return {
        "data": [present_list_item(r, env.id, env.slug) for r in page],
        "pagination": pagination,
    }


def _timestamp(name: str, value: str | None) -> datetime | None:
    """ISO-8601, or milliseconds since the epoch (what Trigger.dev's SDK sends)."""
    if value is None:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise EngineError(
            f"{name} must be an ISO-8601 timestamp or epoch milliseconds, got {value!r}"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _created_range(query: QueryParams) -> tuple[datetime | None, datetime | None]:
    """``filter[createdAt][from|to]`` (ISO) or ``filter[createdAt][period]`` ("1h", "7d")."""
    created_from = _timestamp("filter[createdAt][from]", query.get("filter[createdAt][from]"))
    created_to = _timestamp("filter[createdAt][to]", query.get("filter[createdAt][to]"))
    if period := query.get("filter[createdAt][period]"):
        try:
            created_from = datetime.now(UTC) - parse_duration(period, "filter[createdAt][period]")
        except ValueError as exc:
            raise EngineError(str(exc)) from None
    return created_from, created_to


async def _cursor_of(request: Request, env: Environment, run_id: str) -> tuple[datetime, str]:
    row = await engine_of(request).retrieve_run(env, run_id)
    return row["created_at"], row["id"]


@router.post("/api/v2/runs/{run_id}/cancel")
async def cancel_run(run_id: str, request: Request, env: Env) -> dict[str, object]:
    canceled = await engine_of(request).cancel_run(env, run_id)
    return {"id": run_id, "canceled": canceled}


@router.post("/api/v1/runs/{run_id}/replay")
async def replay_run(run_id: str, request: Request, env: Env) -> dict[str, object]:
    return await engine_of(request).replay_run(env, run_id)


class RescheduleBody(BaseModel):
    delay: str | int | float | datetime


@router.post("/api/v1/runs/{run_id}/reschedule")
async def reschedule_run(run_id: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, RescheduleBody)
    try:
        run_at = parse_when(body.delay, "delay")
    except ValueError as exc:
        raise EngineError(str(exc)) from None
    await engine_of(request).reschedule_run(env, run_id, run_at)
    return present_run(await engine_of(request).retrieve_run(env, run_id))


class ResetKeyBody(BaseModel):
    task_identifier: str = Field(alias="taskIdentifier", min_length=1)


@router.post("/api/v1/idempotencyKeys/{key}/reset")
async def reset_idempotency_key(key: str, request: Request, env: Env) -> dict[str, object]:
    body = await read_model(request, ResetKeyBody)
    reset = await engine_of(request).reset_idempotency_key(env, body.task_identifier, key)
    return {"id": key, "runs": reset}
