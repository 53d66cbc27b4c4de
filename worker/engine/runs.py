"""Creating, reading, listing and canceling runs (the public side of the engine)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from worker.common.statuses import FINAL_STATUSES
from worker.engine.db import Conn, Pool
from worker.engine.errors import EngineError, NotFound, PayloadTooLarge
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.models import MAX_PAYLOAD_BYTES, BatchItem, TriggerBody, TriggerOptions
from worker.engine.payload_schema import check_payload
from worker.engine.queries import Q

#: A run that ended in one of these gives its idempotency key back (reference §1.11).
_RELEASES_KEY = frozenset(
    {"COMPLETED_WITH_ERRORS", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT", "EXPIRED"}
)


def encode_payload(payload: Any, payload_type: str | None) -> tuple[str, str]:
    """The stored text and type of a trigger payload; refuses payloads over the limit."""
    if payload_type and payload_type != "application/json":
        if not isinstance(payload, str):
            raise EngineError(f"payload must be a string when payloadType is {payload_type!r}")
        text = payload
    else:
        payload_type = "application/json"
        text = orjson.dumps(payload).decode()
    if len(text) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"payload is {len(text)} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (3 MiB). "
            "Store large data elsewhere and pass a reference."
        )
    return text, payload_type


async def _claim_request(conn: Conn, env: Environment, key: str | None) -> Any:
    """For a retried HTTP request: the response already given, else None (and claim the key)."""
    if key is None:
        return None
    params = {"environment_id": env.id, "request_key": key}
    claimed = await (await conn.execute(Q.claim_request_key, params)).fetchone()
    if claimed:
        return None
    row = await (await conn.execute(Q.find_request_key, params)).fetchone()
    return row["response"] if row else None


async def _save_request(conn: Conn, env: Environment, key: str | None, response: Any) -> None:
    if key is not None:
        await conn.execute(
            Q.save_request_key,
            {"environment_id": env.id, "request_key": key, "response": Jsonb(response)},
        )


async def _insert_run(
    conn: Conn,
    env: Environment,
    task_id: str,
    definition: dict[str, Any],
    payload: tuple[str, str],
    options: TriggerOptions,
    batch_id: str | None = None,
) -> tuple[str, bool, str]:
    """Insert one run, honouring its idempotency key. Returns (run id, is_cached, status)."""
    key = options.idempotency_key
    key_params = {"environment_id": env.id, "task_id": task_id, "idempotency_key": key}
    run_at = options.run_at()
    status = "DELAYED" if run_at else "PENDING"
    queue = options.queue if isinstance(options.queue, str) else None
    if isinstance(options.queue, dict):
        queue = options.queue.get("name")
    params = {
        "environment_id": env.id,
        "task_id": task_id,
        "status": status,
        "payload": payload[0],
        "payload_type": payload[1],
        "queue": queue or definition.get("queue", {}).get("name") or f"task/{task_id}",
        "priority_ms": round(options.priority * 1000),
        "run_at": run_at,
        "max_attempts": options.max_attempts,
        "max_duration": options.max_duration,
        "machine": options.machine,
        "idempotency_key": key,
        "idempotency_key_expires_at": options.idempotency_expiry(),
        "tags": options.tags or [],
        "metadata": Jsonb(options.metadata) if options.metadata is not None else None,
        "batch_id": batch_id,
        "parent_run_id": options.parent_run_id,
        "root_run_id": None,
        "is_test": options.test,
    }
    for _ in range(3):
        if key is not None:
            existing = await (await conn.execute(Q.find_idempotent_run, key_params)).fetchone()
            if existing:
                expired = existing["idempotency_key_expires_at"] <= datetime.now(UTC)
                if not expired and existing["status"] not in _RELEASES_KEY:
                    return existing["id"], True, existing["status"]
                await conn.execute(Q.clear_idempotency_key, {"id": existing["id"]})
        params["id"] = new_id("run")
        inserted = await (await conn.execute(Q.insert_run, params)).fetchone()
        if inserted:
            return inserted["id"], False, status
        # Lost a race with a concurrent trigger using the same key: read the winner.
    raise EngineError("could not create the run: idempotency key contention; retry the request")


async def _task_definitions(
    conn: Conn, env: Environment, task_ids: list[str]
) -> dict[str, dict[str, Any]]:
    cur = await conn.execute(Q.find_tasks, {"environment_id": env.id, "task_ids": task_ids})
    return {row["task_id"]: row["definition"] for row in await cur.fetchall()}


def _unknown_task(env: Environment, task_id: str) -> NotFound:
    return NotFound(
        f"task {task_id!r} is not registered in the {env.slug} environment of project "
        f"{env.project_ref!r}; start a worker that exports it (trigger dev / trigger worker)"
    )


async def trigger(
    pool: Pool,
    env: Environment,
    task_id: str,
    body: TriggerBody,
    request_key: str | None = None,
) -> dict[str, Any]:
    """Create one run. Returns ``{"id", "isCached"}``."""
    payload = encode_payload(body.payload, body.payload_type)
    async with pool.connection() as conn, conn.transaction():
        cached = await _claim_request(conn, env, request_key)
        if cached:
            return dict(cached)
        definitions = await _task_definitions(conn, env, [task_id])
        if task_id not in definitions:
            raise _unknown_task(env, task_id)
        check_payload(task_id, definitions[task_id], body.payload, payload[1])
        run_id, is_cached, status = await _insert_run(
            conn, env, task_id, definitions[task_id], payload, body.options
        )
        if status == "PENDING" and not is_cached:
            await conn.execute(Q.notify_runs, {"environment_id": env.id})
        response = {"id": run_id, "isCached": is_cached}
        await _save_request(conn, env, request_key, response)
    return response


async def batch_trigger(
    pool: Pool,
    env: Environment,
    items: list[BatchItem],
    request_key: str | None = None,
) -> dict[str, Any]:
    """Create a batch of runs, possibly of several tasks, in one transaction.

    An item that cannot be triggered (unknown task, payload too big) gets an ``error`` entry
    in ``runs`` at its index; the others are created.
    """
    async with pool.connection() as conn, conn.transaction():
        cached = await _claim_request(conn, env, request_key)
        if cached:
            return dict(cached)
        task_ids = sorted({item.task for item in items if item.task})
        definitions = await _task_definitions(conn, env, task_ids)
        batch_id = new_id("batch")
        await conn.execute(
            Q.insert_batch, {"id": batch_id, "environment_id": env.id, "run_count": len(items)}
        )
        runs: list[dict[str, Any]] = []
        notify = False
        for item in items:
            task_id = item.task or ""
            try:
                if task_id not in definitions:
                    raise _unknown_task(env, task_id)
                payload = encode_payload(item.payload, item.payload_type)
                check_payload(task_id, definitions[task_id], item.payload, payload[1])
                async with conn.transaction():  # a savepoint: one bad item spoils nothing else
                    run_id, is_cached, status = await _insert_run(
                        conn, env, task_id, definitions[task_id], payload, item.options, batch_id
                    )
            except EngineError as exc:
                runs.append({"taskIdentifier": task_id, "error": exc.message})
                continue
            notify = notify or (status == "PENDING" and not is_cached)
            runs.append({"id": run_id, "taskIdentifier": task_id, "isCached": is_cached})
        if notify:
            await conn.execute(Q.notify_runs, {"environment_id": env.id})
        response = {"id": batch_id, "runCount": len(items), "runs": runs}
        await _save_request(conn, env, request_key, response)
    return response


async def retrieve(pool: Pool, env: Environment, run_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        row = await (
            await conn.execute(Q.get_run, {"id": run_id, "environment_id": env.id})
        ).fetchone()
        if row is None:
            raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
        attempts = await (await conn.execute(Q.list_attempts, {"id": run_id})).fetchall()
    return {**row, "attempts": attempts}


async def retrieve_batch(pool: Pool, env: Environment, batch_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        params = {"id": batch_id, "environment_id": env.id}
        row = await (await conn.execute(Q.get_batch, params)).fetchone()
    if row is None:
        raise NotFound(f"batch {batch_id!r} not found in the {env.slug} environment")
    return {
        "id": row["id"],
        "status": "PENDING" if row["unfinished"] else "COMPLETED",
        "runCount": row["run_count"],
        "runs": row["run_ids"],
        "createdAt": row["created_at"].isoformat(),
    }


async def list_runs(
    pool: Pool,
    env: Environment,
    *,
    statuses: list[str] | None = None,
    task_ids: list[str] | None = None,
    tag: str | None = None,
    batch_id: str | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 25,
) -> list[dict[str, Any]]:
    params = {
        "environment_id": env.id,
        "statuses": statuses,
        "task_ids": task_ids,
        "tag": tag,
        "batch_id": batch_id,
        "after_created": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": limit,
    }
    async with pool.connection() as conn:
        return await (await conn.execute(Q.list_runs, params)).fetchall()


async def cancel(pool: Pool, env: Environment, run_id: str) -> list[str]:
    """Cancel a run and its unfinished descendants. Returns the ids canceled now."""
    canceled: list[str] = []
    async with pool.connection() as conn, conn.transaction():
        row = await (
            await conn.execute(Q.get_run, {"id": run_id, "environment_id": env.id})
        ).fetchone()
        if row is None:
            raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
        pending = [run_id]
        seen: set[str] = set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            params = {"id": current, "environment_id": env.id}
            if await (await conn.execute(Q.cancel_run, params)).fetchone():
                canceled.append(current)
            children = await (await conn.execute(Q.children_to_cancel, {"id": current})).fetchall()
            pending.extend(child["id"] for child in children)
    return canceled


def is_final(status: str) -> bool:
    return status in FINAL_STATUSES
