"""``GET /api/v1/tasks``: the environment's current tasks with their payload schemas, for
operators and tools (the MCP server, worker/mcp_server.py; docs/api.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from worker.api.auth import authenticate
from worker.api.state import engine_of
from worker.engine.keys import Environment

router = APIRouter()
Env = Annotated[Environment, Depends(authenticate)]
#: definition key (the worker's manifest) → wire name
_SHOWN = {"queue": "queue", "machine": "machine", "max_duration": "maxDuration",
          "retry": "retry", "description": "description"}


@router.get("/api/v1/tasks")
async def list_tasks(request: Request, env: Env) -> dict[str, object]:
    """The environment's current task definitions (the last version registered or promoted)."""
    rows = await engine_of(request).list_tasks(env)
    data = []
    for row in rows:
        definition = row["definition"] or {}
        item = {"id": row["task_id"], "version": row["version"]}
        item.update({wire: definition[k] for k, wire in _SHOWN.items()
                     if definition.get(k) is not None})
        item["payloadSchema"] = definition.get("payload_schema")
        data.append(item)
    return {"data": data}
