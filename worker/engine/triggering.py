"""Creating runs: one trigger or a batch, with idempotency keys, debounce, delays, TTLs,
version pins, queues and concurrency keys (docs/triggerdev-semantics.md, "Idempotency keys",
"Trigger options", "Queues")."""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from worker.common.limits import check_text
from worker.engine import waitpoints
from worker.engine.db import Conn, Pool, fetch_one
from worker.engine.errors import Conflict, EngineError
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.models import BatchItem, BatchOptions, TriggerBody
from worker.engine.payload_schema import check_payload
from worker.engine.queries import Q
from worker.engine.run_creator import LIVE_WORKER_SECONDS as LIVE_WORKER_SECONDS  # leases.py
from worker.engine.run_creator import RunCreator, encode_payload, is_plain


async def _claim_request(
    conn: Conn, env: Environment, key: str | None, response: dict[str, Any]
) -> Any:
    """For a retried HTTP request: the response already given. Otherwise claim the key with
    ``response`` (what this request will answer unless it changes) and return None."""
    if key is None:
        return None
    check_text(key, "x-trigger-request-idempotency-key")
    params = {"environment_id": env.id, "request_key": key, "response": Jsonb(response)}
    if await fetch_one(conn, Q.claim_request_key, params):
        return None
    row = await fetch_one(conn, Q.find_request_key, params)
    return row["response"] if row else None


async def _same_request(
    conn: Conn, key: str | None, cached: dict[str, Any], task_ids: set[str], batch: bool
) -> dict[str, Any]:
    """A request key answers again only for the same kind of request on the same tasks:
    reusing it for another task (or a batch for a trigger) is a client bug, not a retry."""
    if batch:
        sent = {str(r.get("taskIdentifier")) for r in cached.get("runs") or []}
        same = "runCount" in cached and sent == task_ids
    else:
        row = None
        if "runCount" not in cached and cached.get("id"):
            row = await fetch_one(conn, Q.run_task_id, {"id": cached["id"]})
        same = row is not None and {row["task_id"]} == task_ids
    if not same:
        raise Conflict(
            f"x-trigger-request-idempotency-key {key!r} was already used for a different "
            "request (another task or kind); use a new key for a new request"
        )
    return dict(cached)


async def _save_request(
    conn: Conn,
    env: Environment,
    key: str | None,
    claimed: dict[str, Any],
    response: dict[str, Any],
) -> None:
    if key is not None and response != claimed:
        await conn.execute(
            Q.save_request_key,
            {"environment_id": env.id, "request_key": key, "response": Jsonb(response)},
        )


async def trigger(
    pool: Pool,
    env: Environment,
    task_id: str,
    body: TriggerBody,
    request_key: str | None = None,
    replayed_from: str | None = None,
) -> dict[str, Any]:
    """Create one run. Returns ``{"id", "isCached"}``."""
    payload = encode_payload(body.payload, body.payload_type)
    planned: dict[str, Any] = {"id": new_id("run"), "isCached": False}
    async with pool.connection() as conn, conn.transaction():
        cached = await _claim_request(conn, env, request_key, planned)
        if cached:
            return await _same_request(conn, request_key, cached, {task_id}, batch=False)
        creator = RunCreator(conn, env)
        await creator.load_definitions([task_id])
        check_payload(task_id, creator.definition(task_id), body.payload, payload[1])
        run_id, is_cached = await creator.create(
            task_id, payload, body.options, replayed_from=replayed_from, run_id=planned["id"]
        )
        response: dict[str, Any] = {"id": run_id, "isCached": is_cached}
        options = body.options
        if options.resume_parent_on_completion or options.journal_seq is not None:
            response.update(
                await _link_to_parent(
                    conn,
                    env,
                    options.parent_run_id,
                    options.journal_seq,
                    task_id,
                    wait=options.resume_parent_on_completion,
                    run_id=run_id,
                    parent_attempt=options.parent_attempt,
                )
            )
        await _save_request(conn, env, request_key, planned, response)
    return response


async def _link_to_parent(
    conn: Conn,
    env: Environment,
    parent_run_id: str | None,
    seq: int | None,
    key: str,
    *,
    wait: bool,
    run_id: str | None = None,
    batch_id: str | None = None,
    parent_attempt: int | None = None,
) -> dict[str, Any]:
    """Journal a child trigger in its parent (so a replay does not trigger it again) and, for
    ``*_and_wait``, create the waitpoint the parent waits on."""
    if parent_run_id is None:
        raise EngineError("resumeParentOnCompletion and journalSeq need parentRunId")
    extra: dict[str, Any] = {}
    waitpoint_id = None
    if wait:
        found = None
        if run_id is not None:  # a cached child may already have its waitpoint
            found = await fetch_one(conn, Q.run_waitpoint_of, {"run_id": run_id})
        if found is None:
            found, _ = await waitpoints.create(
                conn, env, "RUN" if run_id else "BATCH", run_id=run_id, batch_id=batch_id
            )
        waitpoint_id = found["id"]
        extra["waitpointId"] = waitpoint_id
        # the children may be finished already (idempotent hits)
        if run_id is not None:
            await conn.execute(Q.complete_finished_run_waitpoints, {"run_id": run_id})
        else:
            await conn.execute(Q.complete_finished_batch_waitpoint, {"batch_id": batch_id})
    if seq is not None:
        kind = ("batch_trigger" if batch_id else "trigger") + ("_and_wait" if wait else "")
        outcome = {"id": run_id or batch_id, "waitpointId": waitpoint_id}
        attempt = await waitpoints.lock_parent(conn, env, parent_run_id, parent_attempt)
        await waitpoints.record(
            conn, parent_run_id, attempt, seq, kind, key, waitpoint_id, outcome
        )
    return extra


async def batch_trigger(
    pool: Pool,
    env: Environment,
    items: list[BatchItem],
    request_key: str | None = None,
    options: BatchOptions | None = None,
) -> dict[str, Any]:
    """Create a batch of runs, possibly of several tasks, in one transaction.

    An item that cannot be triggered (unknown task, payload too big, bad payload) gets an
    ``error`` entry in ``runs`` at its index; the others are created. A batch its parent waits
    for (``resumeParentOnCompletion``) is refused whole instead: the parent gets one result per
    item, in item order, or an error saying which items were refused.
    """
    async with pool.connection() as conn, conn.transaction():
        cached = await _claim_request(conn, env, request_key, {})
        if cached:
            tasks = {item.task or "" for item in items}
            return await _same_request(conn, request_key, cached, tasks, batch=True)
        creator = RunCreator(conn, env)
        await creator.load_definitions(sorted({item.task for item in items if item.task}))
        batch_id = new_id("batch")
        await conn.execute(
            Q.insert_batch, {"id": batch_id, "environment_id": env.id, "run_count": len(items)}
        )
        runs: list[dict[str, Any]] = []
        plain: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            task_id = item.task or ""
            try:
                payload = encode_payload(item.payload, item.payload_type)
                check_payload(task_id, creator.definition(task_id), item.payload, payload[1])
                if is_plain(item.options, payload):
                    row = await creator.params(
                        task_id, payload, item.options, batch_id, batch_index=index
                    )
                    row["id"] = new_id("run")
                    plain.append(row)
                    runs.append({"id": row["id"], "taskIdentifier": task_id, "isCached": False})
                    continue
                async with conn.transaction():  # a savepoint: one bad item spoils nothing else
                    run_id, is_cached = await creator.create(
                        task_id, payload, item.options, batch_id, batch_index=index
                    )
            except EngineError as exc:
                runs.append({"taskIdentifier": task_id, "error": exc.message})
                continue
            runs.append({"id": run_id, "taskIdentifier": task_id, "isCached": is_cached})
        waited = options is not None and options.resume_parent_on_completion
        refused = [(i, r) for i, r in enumerate(runs) if "id" not in r]
        if waited and refused:
            # The parent reads one result per item, in item order: a refused item would have
            # none (and shift the others), so the whole batch is refused and nothing runs.
            raise EngineError(
                "batch trigger-and-wait refused, nothing was triggered: "
                + "; ".join(f"item {i} ({r['taskIdentifier']}): {r['error']}" for i, r in refused)
            )
        await creator.insert_plain(plain)
        response: dict[str, Any] = {"id": batch_id, "runCount": len(items), "runs": runs}
        if options and (options.resume_parent_on_completion or options.journal_seq is not None):
            key = ",".join(sorted({item.task or "" for item in items}))
            response.update(
                await _link_to_parent(
                    conn,
                    env,
                    options.parent_run_id,
                    options.journal_seq,
                    key,
                    wait=options.resume_parent_on_completion,
                    batch_id=batch_id,
                    parent_attempt=options.parent_attempt,
                )
            )
        await _save_request(conn, env, request_key, {}, response)
    return response
