"""Read endpoints for operators and tools (the MCP server, worker/mcp_server.py): the
environment's current tasks with their payload schemas, and a run's logs (docs/api.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from worker.api.auth import authenticate
from worker.engine.errors import EngineError, NotFound
from worker.engine.keys import Environment
from worker.engine.queries import Q

router = APIRouter()
Env = Annotated[Environment, Depends(authenticate)]
#: definition key (the worker's manifest) → wire name
_SHOWN = {"queue": "queue", "machine": "machine", "max_duration": "maxDuration",
          "retry": "retry", "description": "description"}


@router.get("/api/v1/tasks")
async def list_tasks(request: Request, env: Env) -> dict[str, Any]:
    """The environment's current task definitions (the last version registered or promoted)."""
    async with request.app.state.pool.connection() as conn:
        rows = await (await conn.execute(Q.list_env_tasks, {"environment_id": env.id})
                      ).fetchall()
    data = []
    for row in rows:
        definition = row["definition"] or {}
        item = {"id": row["task_id"], "version": row["version"]}
        item.update({wire: definition[k] for k, wire in _SHOWN.items()
                     if definition.get(k) is not None})
        item["payloadSchema"] = definition.get("payload_schema")
        data.append(item)
    return {"data": data}


@router.get("/api/v1/runs/{run_id}/logs")
async def run_logs(run_id: str, request: Request, env: Env) -> dict[str, Any]:
    """``?after=<log id>&limit=<1..1000>`` → ``{"data": [...], "next": <id or null>}``."""
    try:
        after = int(request.query_params.get("after", "0"))
        limit = int(request.query_params.get("limit", "200"))
    except ValueError:
        raise EngineError("after and limit must be integers") from None
    if not 1 <= limit <= 1000 or after < 0:
        raise EngineError("limit must be between 1 and 1000, after at least 0")
    params = {"run_id": run_id, "environment_id": env.id, "after": after, "limit": limit}
    async with request.app.state.pool.connection() as conn:
        if await (await conn.execute(Q.run_in_env, params)).fetchone() is None:
            raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
        rows = await (await conn.execute(Q.run_logs_page, params)).fetchall()
    data = [{"id": r["id"], "attempt": r["attempt_number"], "level": r["level"],
             "message": r["message"], "attributes": r["attributes"], "time": r["logged_at"]}
            for r in rows]
    return {"data": data, "next": rows[-1]["id"] if len(rows) == limit else None}
