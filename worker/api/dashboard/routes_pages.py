"""The Test page (trigger a task by hand), waitpoint tokens, queues, workers and versions."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from worker.api.dashboard.web import PREFIX, CsrfDep, EnvDep, Page, SessionDep, back_to, render
from worker.api.state import engine_of
from worker.engine import queues
from worker.engine.db import Row, fetch_all
from worker.engine.errors import EngineError
from worker.engine.models import MAX_PAYLOAD_BYTES, TriggerBody, TriggerOptions
from worker.engine.queries import Q
from worker.engine.triggering import trigger

router = APIRouter(prefix=PREFIX + "/{project}/{env}", include_in_schema=False)


def example_of(schema: Any, depth: int = 0) -> Any:
    """A payload that a JSON schema accepts, to start from: defaults and examples first,
    else the simplest value of each type."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if "default" in schema:
        return schema["default"]
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: example_of(sub, depth + 1) for name, sub in props.items()}
    simple = {"string": "", "integer": 0, "number": 0, "boolean": False, "array": []}
    return simple.get(str(kind))


async def _tasks(request: Request, env_id: str) -> list[Row]:
    async with engine_of(request).pool.connection() as conn:
        return list(await fetch_all(conn, Q.dash_tasks, {"environment_id": env_id}))


@router.get("/test")
async def test_page(request: Request, session: SessionDep, env: EnvDep) -> HTMLResponse:
    tasks = await _tasks(request, env.id)
    chosen = request.query_params.get("task") or (tasks[0]["task_id"] if tasks else "")
    definition: dict[str, Any] = next(
        (t["definition"] for t in tasks if t["task_id"] == chosen), {}
    )
    schema = definition.get("payload_schema")
    example = example_of(schema) if schema else {}
    return render(
        "test.html",
        Page(session, env, "test"),
        tasks=tasks,
        chosen=chosen,
        schema=schema,
        example=orjson.dumps(example, option=orjson.OPT_INDENT_2).decode(),
        error=request.query_params.get("error"),
    )


@router.post("/test")
async def run_test(
    request: Request,
    _: CsrfDep,
    env: EnvDep,
    task: Annotated[str, Form()],
    payload: Annotated[str, Form()] = "{}",
    delay: Annotated[str, Form()] = "",
    tags: Annotated[str, Form()] = "",
    queue: Annotated[str, Form()] = "",
    idempotency_key: Annotated[str, Form()] = "",
    machine: Annotated[str, Form()] = "",
) -> Response:
    base = f"{PREFIX}/{env.project_ref}/{env.slug}"
    here = f"{base}/test?task={task}"
    try:
        value = orjson.loads(payload or "null")
        options = TriggerOptions(
            delay=delay.strip() or None,
            tags=[t.strip() for t in tags.split(",") if t.strip()] or None,
            queue=queue.strip() or None,
            idempotency_key=idempotency_key.strip() or None,
            machine=machine.strip() or None,
            test=True,
        )
        result = await trigger(
            engine_of(request).pool, env, task, TriggerBody(payload=value, options=options)
        )
    except orjson.JSONDecodeError as exc:
        return back_to(here, error=f"The payload is not JSON: {exc}")
    except (ValueError, EngineError) as exc:
        return back_to(here, error=getattr(exc, "message", None) or str(exc))
    return back_to(f"{base}/runs/{result['id']}")


@router.get("/tokens")
async def tokens_page(request: Request, session: SessionDep, env: EnvDep) -> HTMLResponse:
    status = request.query_params.get("status") or None
    rows = await engine_of(request).list_tokens(env, status=status, idempotency_key=None, tags=None,
        after=None, limit=100,
    )
    return render(
        "tokens.html",
        Page(session, env, "tokens"),
        tokens=rows,
        status=status or "",
        notice=request.query_params.get("notice"),
        error=request.query_params.get("error"),
    )


@router.post("/tokens/{token_id}/complete")
async def complete_token(
    request: Request, token_id: str, _: CsrfDep, env: EnvDep, data: Annotated[str, Form()] = "{}"
) -> Response:
    here = f"{PREFIX}/{env.project_ref}/{env.slug}/tokens"
    try:
        value = orjson.loads(data or "{}")
    except orjson.JSONDecodeError as exc:
        return back_to(here, error=f"The body is not JSON: {exc}")
    text = orjson.dumps(value).decode()
    if len(text) > MAX_PAYLOAD_BYTES:
        return back_to(here, error=f"The body is over {MAX_PAYLOAD_BYTES} bytes.")
    done = await engine_of(request).complete_token(env, token_id, text, "application/json"
    )
    return back_to(here, notice=f"Completed {token_id}." if done else "It was already complete.")


@router.get("/queues")
async def queues_page(request: Request, session: SessionDep, env: EnvDep) -> HTMLResponse:
    rows = await engine_of(request).list_queues(env)
    return render(
        "queues.html",
        Page(session, env, "queues"),
        queues=rows,
        notice=request.query_params.get("notice"),
        error=request.query_params.get("error"),
    )


@router.post("/queues/action")
async def queue_action(
    request: Request,
    _: CsrfDep,
    env: EnvDep,
    name: Annotated[str, Form()],
    action: Annotated[str, Form()],
    limit: Annotated[str, Form()] = "",
) -> Response:
    here = f"{PREFIX}/{env.project_ref}/{env.slug}/queues"
    pool = engine_of(request).pool
    if action in ("pause", "resume"):
        await queues.set_paused(pool, env, name, action == "pause")
        return back_to(here, notice=f"{'Paused' if action == 'pause' else 'Resumed'} {name}.")
    if action == "override":
        if not limit.strip().isdigit() or int(limit) > 100000:
            return back_to(here, error="The limit is a whole number from 0 to 100000.")
        await queues.override_limit(pool, env, name, int(limit))
        return back_to(here, notice=f"{name} now runs at most {int(limit)} at once.")
    if action == "reset":
        await queues.override_limit(pool, env, name, None)
        return back_to(here, notice=f"{name} is back to its own limit.")
    return back_to(here, error=f"Unknown action {action!r}.")


@router.get("/workers")
async def workers_page(request: Request, session: SessionDep, env: EnvDep) -> HTMLResponse:
    async with engine_of(request).pool.connection() as conn:
        workers = await fetch_all(conn, Q.dash_workers, {"environment_id": env.id})
        versions = await fetch_all(conn, Q.dash_versions, {"environment_id": env.id})
    return render(
        "workers.html", Page(session, env, "workers"), workers=workers, versions=versions
    )
