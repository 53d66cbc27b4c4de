"""Two-phase batches of Trigger.dev's SDK 4.x: ``POST /api/v3/batches``, NDJSON
``POST /api/v3/batches/{id}/items``, and ``GET /api/v2/batches/{id}`` (docs/api.md)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from worker.api.auth import authenticate
from worker.api.bodies import MAX_BODY_BYTES, read_model, validate
from worker.api.routes_realtime import principal
from worker.api.state import engine_of
from worker.engine.errors import EngineError, PayloadTooLarge
from worker.engine.keys import Environment
from worker.engine.models import BatchItem

router = APIRouter()
Env = Annotated[Environment, Depends(authenticate)]


class CreateBatchBody(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    run_count: int = Field(alias="runCount")
    task_identifiers: list[str] | None = Field(default=None, alias="taskIdentifiers")
    parent_run_id: str | None = Field(default=None, alias="parentRunId")
    resume_parent_on_completion: bool = Field(default=False, alias="resumeParentOnCompletion")
    idempotency_key: str | None = Field(default=None, alias="idempotencyKey", max_length=2048)


@router.post("/api/v3/batches")
async def create_batch(request: Request, response: Response, env: Env) -> dict[str, object]:
    body = await read_model(request, CreateBatchBody)
    if body.resume_parent_on_completion:
        # a TypeScript parent run cannot run here, so nothing could wait for the batch
        raise EngineError(
            "resumeParentOnCompletion is not supported for two-phase batches: wait for a "
            "batch from a Python task with batch.trigger_and_wait"
        )
    created = await engine_of(request).create_batch(env, body.run_count, body.idempotency_key
    )
    token = await engine_of(request).create_public_token(env, [f"read:batch:{created.id}"], "1h"
    )
    response.headers["x-trigger-jwt"] = token["token"]
    out: dict[str, object] = {
        "id": created.id,
        "runCount": created.run_count,
        "isCached": created.is_cached,
    }
    if body.idempotency_key is not None:
        out["idempotencyKey"] = body.idempotency_key
    return out


def _items(raw: bytes) -> list[tuple[int, BatchItem]]:
    items: list[tuple[int, BatchItem]] = []
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise EngineError(f"line {number} is not JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("index"), int):
            raise EngineError(f'line {number} must be an object with an integer "index"')
        index = data.pop("index")
        items.append((index, validate(BatchItem, data)))
    return items


@router.post("/api/v3/batches/{batch_id}/items")
async def stream_batch_items(batch_id: str, request: Request, env: Env) -> dict[str, object]:
    """NDJSON body, one ``{"index", "task", "payload", "options"}`` per line."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge(f"request body is over the limit of {MAX_BODY_BYTES} bytes")
    result = await engine_of(request).add_batch_items(env, batch_id, _items(raw))
    out: dict[str, object] = {
        "id": result.id,
        "itemsAccepted": result.accepted,
        "itemsDeduplicated": result.deduplicated,
        "sealed": result.sealed,
    }
    if not result.sealed:
        out.update(enqueuedCount=result.enqueued, expectedCount=result.expected)
    return out


@router.get("/api/v2/batches/{batch_id}")
async def retrieve_batch_v2(batch_id: str, request: Request) -> dict[str, object]:
    who = await principal(request)
    who.require("read:runs", f"read:batch:{batch_id}")
    row = await engine_of(request).retrieve_batch(who.env, batch_id)
    errors = list(row["processing_errors"] or [])
    status = "PARTIAL_FAILED" if errors else "COMPLETED"
    if row["sealed_at"] is None:
        status = "PENDING"
    processing: dict[str, object] = {"errors": errors}
    if row["sealed_at"] is not None:
        processing["completedAt"] = row["sealed_at"].isoformat()
    out: dict[str, object] = {
        "id": row["id"],
        "status": status,
        "createdAt": row["created_at"].isoformat(),
        "updatedAt": row["last_change"].isoformat(),
        "runCount": row["run_count"],
        "runs": row["run_ids"],
        "processing": processing,
    }
    if row["idempotency_key"] is not None:
        out["idempotencyKey"] = row["idempotency_key"]
    return out



