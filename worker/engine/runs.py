"""Reading, listing, canceling, replaying and rescheduling runs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime

from worker.common.statuses import FINAL_STATUSES
from worker.engine import run_reads, triggering
from worker.engine.db import Pool, Row, fetch_all, fetch_one, one_statement
from worker.engine.errors import Conflict, NotFound
from worker.engine.keys import Environment
from worker.engine.models import RunOptions, TriggerSpec
from worker.engine.queries import Q
from worker.engine.realtime import RealtimeHub, run_brief


async def retrieve(pool: Pool, env: Environment, run_id: str, *,
                   children: bool = False) -> Row:
    """The run with its attempts and depth in one statement (and, with ``children``, the runs
    it triggered under ``"children"`` when it triggered none: run_reads.assemble)."""
    rows = await one_statement(pool, Q.retrieve_run, {"id": run_id, "environment_id": env.id})
    row = run_reads.assemble(rows[0] if rows else None, children=children)
    if row is None:
        raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
    return row


#: the longest ``GET /api/v3/runs/{id}?waitMs=N`` waits for the run to end (docs/api.md)
MAX_WAIT_MS = 60_000


async def wait_final(pool: Pool, hub: RealtimeHub, env: Environment, run_id: str,
                     wait_ms: int, *, children: bool = False,
                     admit: Callable[[Row], None] | None = None,
                     slot: Callable[[], AbstractAsyncContextManager[object]] | None = None,
                     ) -> Row:
    """The run as :func:`retrieve` returns it, as soon as it is final or after ``wait_ms``
    (capped at MAX_WAIT_MS), whichever comes first. Woken by the run's change notification
    (LISTEN/NOTIFY through the hub), never by polling; holds no connection while it waits.
    When the completion is committed by this process, it hands over the run it read in its
    own round trip (RealtimeHub.wake_final): no read after the wake-up.

    The first read is the caller's too: ``admit`` sees it first (to refuse a reader that may
    not see the run: it raises), and only a run not final yet takes a ``slot`` (the
    environment's long-poll cap) for the wait. That first read is the run's status alone (one
    statement where the whole run is three): the run is usually still going. Without
    ``admit`` (a reader who may read every run of ``env``), a run this process created and
    has not heard end (RealtimeHub.running: the caller of ``runs.poll`` right after its
    trigger) is not read at all before the wait."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + min(max(wait_ms, 0), MAX_WAIT_MS) / 1000
    # before the read: a change after it is not missed
    ended = await hub.watch_final(run_id, env.id, children=children)
    try:
        if admit is not None or not hub.running(run_id, env.id):
            row = await run_brief(pool, env, run_id)
            if admit is not None:
                admit(row)
            if row["status"] in FINAL_STATUSES or deadline <= loop.time():
                return await retrieve(pool, env, run_id, children=children)
        async with slot() if slot is not None else contextlib.nullcontext():
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return await retrieve(pool, env, run_id, children=children)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await ended.wait()
                ended.clear()
                # a completion of this process may have read the final run for us already
                run = ended.take() or await retrieve(pool, env, run_id, children=children)
                if run["status"] in FINAL_STATUSES:
                    return run
    finally:
        hub.unwatch_final(run_id, ended)


async def retrieve_batch(pool: Pool, env: Environment, batch_id: str) -> Row:
    async with pool.connection() as conn:
        params = {"id": batch_id, "environment_id": env.id}
        row = await fetch_one(conn, Q.get_batch, params)
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
    tags: list[str] | None = None,
    batch_id: str | None = None,
    queues: list[str] | None = None,
    versions: list[str] | None = None,
    is_test: bool | None = None,
    created_from: datetime | None = None,
    created_to: datetime | None = None,
    after: tuple[datetime, str] | None = None,
    limit: int = 25,
) -> list[Row]:
    params = {
        "environment_id": env.id,
        "statuses": statuses,
        "task_ids": task_ids,
        "tags": tags,
        "batch_id": batch_id,
        "queues": queues,
        "versions": versions,
        "is_test": is_test,
        "created_from": created_from,
        "created_to": created_to,
        "after_created": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": limit,
    }
    async with pool.connection() as conn:
        return await fetch_all(conn, Q.list_runs, params)


async def cancel(pool: Pool, env: Environment, run_id: str) -> list[str]:
    """Cancel a run and its unfinished descendants. Returns the ids canceled now."""
    canceled: list[str] = []
    async with pool.connection() as conn, conn.transaction():
        params = {"id": run_id, "environment_id": env.id}
        if await fetch_one(conn, Q.get_run, params) is None:
            raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
        pending, seen = [run_id], set()
        while pending:
            current = pending.pop()
            if current in seen:
                continue
            seen.add(current)
            params = {"id": current, "environment_id": env.id}
            if await fetch_one(conn, Q.cancel_run, params):
                canceled.append(current)
            children = await fetch_all(conn, Q.children_to_cancel, {"id": current})
            pending.extend(child["id"] for child in children)
    return canceled


async def replay(pool: Pool, env: Environment, run_id: str) -> Row:
    """A new run of the same task with the same payload, tags and metadata, on the newest
    version (not pinned to the original's).

    The metadata is the one given when the original was triggered (``seed_metadata``), as in
    Trigger.dev: what the original's code changed since is not carried over."""
    original = await retrieve(pool, env, run_id)
    payload = original["payload"]
    if original["payload_type"] == "application/json" and payload is not None:
        import orjson

        payload = orjson.loads(payload)
    options = RunOptions(tags=tuple(original["tags"] or ()), metadata=original["seed_metadata"])
    spec = TriggerSpec(original["task_id"], payload, original["payload_type"], options)
    result = await triggering.trigger(pool, env, spec, replayed_from=run_id)
    return {**result, "taskIdentifier": original["task_id"]}


async def reschedule(pool: Pool, env: Environment, run_id: str, run_at: datetime) -> None:
    """Move a DELAYED run's start; refused once it is no longer delayed."""
    async with pool.connection() as conn, conn.transaction():
        params = {"id": run_id, "environment_id": env.id, "run_at": run_at}
        if await fetch_one(conn, Q.reschedule_run, params) is None:
            row = await fetch_one(conn, Q.get_run, params)
            if row is None:
                raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
            raise Conflict(
                f"run {run_id!r} is {row['status']}, only a DELAYED run can be rescheduled"
            )


async def reset_idempotency_key(pool: Pool, env: Environment, task_id: str, key: str) -> list[str]:
    """Forget an idempotency key so the next trigger with it creates a new run."""
    async with pool.connection() as conn, conn.transaction():
        rows = await fetch_all(
            conn,
            Q.reset_idempotency_key,
            {"environment_id": env.id, "task_id": task_id, "idempotency_key": key},
        )
    return [r["id"] for r in rows]

