"""Two-phase batches, as Trigger.dev's SDK 4.x makes them: create the batch with its run count,
then stream the items (each with its index); the batch is sealed once every index arrived.

Items are deduplicated by index, so a client may resend a whole stream after a failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg.types.json import Jsonb

from worker.engine.db import Pool, Row, fetch_all, fetch_one
from worker.engine.errors import EngineError, NotFound
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.models import MAX_BATCH_ITEMS, BatchItem
from worker.engine.payload_schema import check_payload
from worker.engine.queries import Q
from worker.engine.run_creator import RunCreator, encode_payload


@dataclass(frozen=True)
class CreatedBatch:
    id: str
    run_count: int
    is_cached: bool


@dataclass
class ItemsResult:
    id: str
    accepted: int = 0
    deduplicated: int = 0
    sealed: bool = False
    enqueued: int = 0
    expected: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)


async def create(
    pool: Pool, env: Environment, run_count: int, idempotency_key: str | None
) -> CreatedBatch:
    """Phase 1: the batch row (or the one an idempotency key already names)."""
    if not 1 <= run_count <= MAX_BATCH_ITEMS:
        raise EngineError(f"runCount must be between 1 and {MAX_BATCH_ITEMS}")
    batch_id = new_id("batch")
    async with pool.connection() as conn, conn.transaction():
        params = {
            "id": batch_id,
            "environment_id": env.id,
            "run_count": run_count,
            "idempotency_key": idempotency_key,
        }
        if await fetch_one(conn, Q.insert_open_batch, params):
            return CreatedBatch(batch_id, run_count, False)
        row = await fetch_one(conn, Q.find_batch_by_key, params)
    if row is None:
        raise EngineError("could not create the batch under key contention; retry the request")
    return CreatedBatch(row["id"], row["run_count"], True)


async def add_items(
    pool: Pool, env: Environment, batch_id: str, items: list[tuple[int, BatchItem]]
) -> ItemsResult:
    """Phase 2: create the runs of ``(index, item)`` not created yet, in one transaction.

    An item that cannot be triggered (unknown task, bad payload) is recorded in the batch's
    processing errors and counts as processed; the others are created.
    """
    result = ItemsResult(batch_id)
    async with pool.connection() as conn, conn.transaction():
        params = {"id": batch_id, "environment_id": env.id}
        batch = await fetch_one(conn, Q.lock_batch, params)
        if batch is None:
            raise NotFound(f"batch {batch_id!r} not found in the {env.slug} environment")
        run_count = batch["run_count"]
        errors: list[dict[str, Any]] = list(batch["processing_errors"] or [])
        rows = await fetch_all(conn, Q.batch_indexes, params)
        done = {r["batch_index"] for r in rows}
        done |= {e["index"] for e in errors}
        creator = RunCreator(conn, env)
        await creator.load_definitions(sorted({item.task for _, item in items if item.task}))
        for index, item in items:
            if not 0 <= index < run_count:
                raise EngineError(f"item index {index} is outside the batch (runCount {run_count})")
            if index in done:
                result.deduplicated += 1
                continue
            done.add(index)
            task_id = item.task or ""
            try:
                payload = encode_payload(item.payload, item.payload_type)
                check_payload(task_id, creator.definition(task_id), item.payload, payload[1])
                async with conn.transaction():  # a savepoint: one bad item spoils nothing else
                    await creator.create(
                        task_id, payload, item.options, batch_id, batch_index=index
                    )
            except EngineError as exc:
                errors.append({"index": index, "taskIdentifier": task_id, "error": exc.message})
            result.accepted += 1
        result.enqueued = len(done)
        result.expected = run_count
        result.sealed = len(done) >= run_count
        result.errors = errors
        await conn.execute(
            Q.update_batch_progress, {**params, "errors": Jsonb(errors), "sealed": result.sealed}
        )
    return result


async def retrieve(pool: Pool, env: Environment, batch_id: str) -> Row:
    async with pool.connection() as conn:
        params = {"id": batch_id, "environment_id": env.id}
        row = await fetch_one(conn, Q.get_batch_v2, params)
    if row is None:
        raise NotFound(f"batch {batch_id!r} not found in the {env.slug} environment")
    return row
