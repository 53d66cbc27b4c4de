"""The worker side of the engine: registration, leases, heartbeats, completions, logs.

A lease is (worker instance id, expiry). Completions are fenced on (run, instance, attempt),
so a worker that lost its lease (expired, canceled) can never record a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from worker.common.errors import internal_error
from worker.common.machines import MACHINE_PRESETS
from worker.common.statuses import API_STATUS
from worker.engine import metadata as run_metadata
from worker.engine import metrics, schedules, trace_context, waitpoints
from worker.engine.completions import Refused, clean_completion, clean_log
from worker.engine.db import Conn, Pool
from worker.engine.errors import EngineError
from worker.engine.keys import Environment
from worker.engine.lease_guards import check_versions, deliverable
from worker.engine.manifest import check_manifest
from worker.engine.models import MAX_OUTPUT_BYTES
from worker.engine.notifier import Notifier
from worker.engine.queries import Q
from worker.engine.retrying import decide
from worker.engine.triggering import LIVE_WORKER_SECONDS

log = logging.getLogger(__name__)

#: retries due sooner than this run again on the same worker, keeping the lease (§2.4)
IN_PLACE_RETRY_MS = 30_000


@dataclass(frozen=True)
class LeaseSettings:
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0


async def register(
    pool: Pool,
    env: Environment,
    instance_id: str,
    content_hash: str,
    tasks: list[dict[str, Any]],
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Record a code version (deduplicated by content hash) and its task definitions."""
    check_manifest(tasks)
    ids = [t.get("id") for t in tasks]
    if any(not isinstance(i, str) or not i for i in ids):
        raise EngineError("every task in the manifest needs a non-empty string id")
    if len(set(ids)) != len(ids):
        raise EngineError("the manifest lists a task id twice")
    params = {"environment_id": env.id, "content_hash": content_hash}
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(Q.insert_version, params)).fetchone()
        if row is None:  # same code registered before (or concurrently): reuse it
            row = await (await conn.execute(Q.find_version, params)).fetchone()
        assert row is not None
        version_id = str(row["id"])
        queues: dict[str, int | None] = {}
        for definition in tasks:
            queue = definition.get("queue") or {}
            name = queue.get("name") or f"task/{definition['id']}"
            definition["queue"] = {
                "name": name,
                "concurrency_limit": queue.get("concurrency_limit"),
            }
            # a queue shared by several tasks: the tightest declared limit wins
            limits = [
                v for v in (queues.get(name), queue.get("concurrency_limit")) if v is not None
            ]
            queues[name] = min(limits) if limits else None
            task_params = {
                "version_id": version_id,
                "task_id": definition["id"],
                "definition": Jsonb(definition),
                "environment_id": env.id,
            }
            await conn.execute(Q.insert_version_task, task_params)
            await conn.execute(Q.upsert_task, task_params)
        await schedules.sync_declarative(conn, env, version_id, tasks)
        await conn.execute(
            Q.upsert_worker,
            {
                "instance_id": instance_id,
                "environment_id": env.id,
                "version_id": version_id,
                "metadata": Jsonb(metadata),
            },
        )
        for name, limit in queues.items():
            await conn.execute(
                Q.upsert_queue,
                {"environment_id": env.id, "name": name, "concurrency_limit": limit},
            )
        # Runs triggered while no worker had their task can go now.
        await conn.execute(Q.release_version_waits, {"environment_id": env.id, "task_ids": ids})
        await conn.execute(Q.notify_runs, {"environment_id": env.id})
    return {"version_id": version_id, "version": row["version"]}


def _iso(value: Any) -> Any:
    return value.isoformat() if value is not None else None


def _dequeued_message(row: dict[str, Any], env: Environment) -> dict[str, Any]:
    machine = row["machine"] or "small-1x"
    return {
        "run_id": row["id"],
        "attempt_number": row["attempt_number"],
        "task_id": row["task_id"],
        "version_id": str(row["version_id"]),
        "version": row["version_name"],
        "payload": row["run_payload"],
        "payload_type": row["payload_type"],
        "max_attempts": row["max_attempts"],
        "retry": row["retry"],
        "max_duration": row["max_duration"],
        "machine": machine,
        "lease_expires_at": _iso(row["lease_expires_at"]),
        "is_final_attempt": row["attempt_number"] >= row["max_attempts"],
        "resumed": row["resumed"],
        # execution time the attempt used before its checkpoint: max_duration spans resumes
        "execution_ms": int(row.get("attempt_execution_ms") or 0) if row["resumed"] else 0,
        "journal": [],
        # the run's span: the parent of this attempt's span (worker/runtime/telemetry.py)
        "traceparent": trace_context.of_row(row).traceparent,
        "ctx": {
            "run": {
                "id": row["id"],
                "tags": row["tags"],
                "created_at": _iso(row["created_at"]),
                "started_at": _iso(row["started_at"]),
                "idempotency_key": row["idempotency_key"],
                "max_attempts": row["max_attempts"],
                "version": row["version_name"],
                "max_duration": row["max_duration"],
                "priority": 0,
                "is_test": row["is_test"],
                "parent_task_run_id": row["parent_run_id"],
                "root_task_run_id": row["root_run_id"],
                "metadata": row["metadata"],
            },
            "attempt": {"number": row["attempt_number"], "started_at": _iso(row["updated_at"])},
            "task": {"id": row["task_id"], "file_path": row["task_file"]},
            "queue": {"name": row["queue"]},
            "environment": {"id": env.id, "slug": env.slug, "type": env.type},
            "project": {"id": env.project_id, "ref": env.project_ref},
            "machine": {"name": machine, **MACHINE_PRESETS.get(machine, {})},
            "batch": {"id": row["batch_id"]} if row["batch_id"] else None,
            # for durable operations inside the run (worker.sdk.durable): who holds the lease,
            # and the journal a resumed run replays
            "worker": {"instance_id": str(row["lease_owner"])},
            "journal": [],
        },
    }


#: version id -> its task ids (immutable once registered; bounded by the versions seen)
_VERSION_TASKS: dict[str, list[str]] = {}
async def dequeue(
    pool: Pool,
    notifier: Notifier,
    settings: LeaseSettings,
    env: Environment,
    instance_id: str,
    versions: list[str],
    max_runs: int,
    wait_ms: int,
    gone: Callable[[], Awaitable[bool]] | None = None,
) -> list[dict[str, Any]]:
    """Lease up to ``max_runs`` runs; long-poll up to ``wait_ms`` when there are none."""
    if not versions:
        raise EngineError("versions must list at least one registered version id")
    await check_versions(pool, env, versions)
    max_runs = max(1, min(max_runs, 100))
    deadline = time.monotonic() + max(0, min(wait_ms, 30_000)) / 1000
    newest_tasks = _VERSION_TASKS.get(versions[0])
    if newest_tasks is None:
        async with pool.connection() as conn:
            cur = await conn.execute(Q.version_task_ids, {"version_id": versions[0]})
            newest_tasks = [r["task_id"] for r in await cur.fetchall()]
        if newest_tasks:  # a registered version never changes: cache it for good
            _VERSION_TASKS[versions[0]] = newest_tasks
    params = {
        "environment_id": env.id,
        "newest": versions[0],
        "versions": versions,
        "newest_tasks": newest_tasks,
        "limit": max_runs,
        "instance_id": instance_id,
        "lease_seconds": settings.lease_seconds,
        "live_seconds": LIVE_WORKER_SECONDS,
    }
    while True:
        if gone is not None and await gone():
            return []  # the worker hung up: leasing now would strand the runs until expiry
        woken = notifier.event(env.id)
        async with pool.connection() as conn:
            started = time.perf_counter()
            # One round trip: the lease commits without waiting for its WAL flush. A lease
            # lost in a crash only puts the run back in the queue (leases are fenced, runs are
            # at-least-once); triggers and completions keep synchronous commits.
            async with conn.pipeline():
                await conn.execute(Q.async_commit)
                cursor = await conn.execute(Q.dequeue, params)
                await conn.commit()
            rows = await cursor.fetchall()
            metrics.DEQUEUE_SECONDS.observe(time.perf_counter() - started)
        if rows:
            messages = [_dequeued_message(row, env) for row in rows]
            # The attempt replays its own journal: a resumed one, or one handed back (release)
            # and leased again. A new attempt has none: a retry runs from the top.
            replaying = [row["id"] for row in rows if row["has_journal"]]
            found: dict[str, list[dict[str, Any]]] = {}
            if replaying:
                async with pool.connection() as conn:
                    found = await waitpoints.journals(conn, replaying)
            for message in messages:
                if message["run_id"] in found:
                    message["journal"] = message["ctx"]["journal"] = found[message["run_id"]]
            ready, given_back = deliverable(messages)
            if given_back:  # back to the queue at once: no run waits for its lease to expire
                await release(pool, env, instance_id, given_back)
            return ready
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        # poll fallback: at most 1 s between looks, even with no notification
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout=min(remaining, 1.0))


async def heartbeat(
    pool: Pool,
    settings: LeaseSettings,
    env: Environment,
    instance_id: str,
    run_ids: list[str],
    stopping: bool = False,
) -> dict[str, Any]:
    params = {
        "run_ids": run_ids,
        "instance_id": instance_id,
        "environment_id": env.id,
        "lease_seconds": settings.lease_seconds,
    }
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(Q.async_commit)  # a lost heartbeat only shortens a lease
        rows = await (await conn.execute(Q.heartbeat, params)).fetchall()
        if stopping:  # a worker shutting down serves nothing: its runs may migrate at once
            await conn.execute(Q.worker_stopped, {"instance_id": instance_id})
            return {"lost": [r for r in run_ids if r not in {x["id"] for x in rows}],
                    "canceled": []}
        worker = await (
            await conn.execute(
                Q.touch_worker,
                {
                    "instance_id": instance_id,
                    "live_seconds": LIVE_WORKER_SECONDS,
                },
            )
        ).fetchone()
        if worker and worker["was_gone"]:  # back after a silence: release what waited for it
            tasks = await (
                await conn.execute(Q.version_task_ids, {"version_id": worker["version_id"]})
            ).fetchall()
            await conn.execute(
                Q.release_version_waits,
                {
                    "environment_id": env.id,
                    "task_ids": [t["task_id"] for t in tasks],
                },
            )
            await conn.execute(Q.notify_runs, {"environment_id": env.id})
        held = {r["id"] for r in rows}
        lost = [r for r in run_ids if r not in held]
        canceled: list[str] = []
        if lost:  # why: a cancel (the task gets on_cancel) or anything else (just stop)
            cur = await conn.execute(Q.canceled_among, {"run_ids": lost, "environment_id": env.id})
            canceled = [r["id"] for r in await cur.fetchall()]
    return {"lost": lost, "canceled": canceled}


async def fail_attempt(
    conn: Conn,
    run: dict[str, Any],
    error: dict[str, Any],
    worker_retry: dict[str, Any] | None = None,
    skipped_retrying: bool = False,
    in_place_lease: float | None = None,
) -> tuple[str, str, dict[str, Any] | None]:
    """Record a failed attempt of a run locked by the caller.

    Returns (outcome, internal status, next): with ``in_place_lease`` (the worker asked for it)
    a retry due within ``IN_PLACE_RETRY_MS`` keeps the lease and starts the next attempt at
    once (``RETRY_IMMEDIATELY``, ``next`` = its dequeue message); otherwise it is requeued.
    """
    outcome = decide(
        error,
        run["attempt_number"],
        run["max_attempts"],
        run["retry"],
        worker_retry,
        skipped_retrying,
        run.get("machine"),
    )
    await conn.execute(
        Q.end_attempt,
        {
            "run_id": run["id"],
            "attempt_number": run["attempt_number"],
            "status": "FAILED",
            "error": Jsonb(error),
        },
    )
    if (
        outcome.retry
        and in_place_lease is not None
        and outcome.delay_ms < IN_PLACE_RETRY_MS
        and outcome.machine is None
    ):
        params = {
            "run_id": run["id"],
            "error": Jsonb(error),
            "lease_seconds": in_place_lease,
            "delay_ms": outcome.delay_ms,
        }
        row = await (await conn.execute(Q.retry_in_place, params)).fetchone()
        if row is not None:
            env = Environment(
                id=str(row["environment_id"]),
                slug="",
                type="",
                concurrency_limit=0,
                project_id="",
                project_ref="",
            )
            return (
                "RETRY_IMMEDIATELY",
                "EXECUTING",
                {**_dequeued_message(row, env), "delay_ms": outcome.delay_ms},
            )
    if outcome.retry:
        await conn.execute(
            Q.retry_run,
            {
                "run_id": run["id"],
                "delay_ms": outcome.delay_ms,
                "error": Jsonb(error),
                "machine": outcome.machine,
            },
        )
        if outcome.delay_ms <= 0:
            await conn.execute(Q.notify_runs, {"environment_id": str(run["environment_id"])})
        status = "PENDING" if outcome.delay_ms <= 0 else "RETRYING_AFTER_FAILURE"
        return "RETRY_QUEUED", status, None
    await conn.execute(
        Q.finish_run,
        {
            "run_id": run["id"],
            "status": outcome.status,
            "output": None,
            "output_type": None,
            "error": Jsonb(error),
        },
    )
    return "RUN_FINISHED", outcome.status, None


async def _complete_one(
    conn: Conn,
    env: Environment,
    instance_id: str,
    item: dict[str, Any],
    in_place_lease: float | None,
) -> dict[str, Any]:
    run_id = item.get("run_id")
    fence = {
        "run_id": run_id,
        "instance_id": instance_id,
        "environment_id": env.id,
        "attempt_number": item.get("attempt_number"),
    }
    run = await (await conn.execute(Q.lock_leased_run, fence)).fetchone()
    if run is None:
        return {"run_id": run_id, "outcome": "LEASE_LOST"}
    if item.get("metadata"):  # the executor's final metadata flush
        await run_metadata.apply_completion(conn, env, run_id, item["metadata"])
    if item.get("ok"):
        output = item.get("output")
        if output is not None and len(output) > MAX_OUTPUT_BYTES:
            error = internal_error(
                "TASK_OUTPUT_ERROR",
                f"output is {len(output)} bytes; the limit is {MAX_OUTPUT_BYTES} bytes (10 MiB)",
            )
            outcome, status, _ = await fail_attempt(conn, run, error, skipped_retrying=True)
            return {"run_id": run_id, "outcome": outcome, "status": API_STATUS[status]}
        await conn.execute(
            Q.end_attempt,
            {
                "run_id": run_id,
                "attempt_number": run["attempt_number"],
                "status": "COMPLETED",
                "error": None,
            },
        )
        await conn.execute(
            Q.finish_run,
            {
                "run_id": run_id,
                "status": "COMPLETED_SUCCESSFULLY",
                "output": output,
                "output_type": item.get("output_type") or "application/json",
                "error": None,
            },
        )
        return {"run_id": run_id, "outcome": "RUN_FINISHED", "status": "COMPLETED"}
    sent = item.get("error")
    failure: dict[str, Any] = (
        sent
        if isinstance(sent, dict) and "type" in sent
        else internal_error("TASK_RUN_CRASHED", "the worker sent a failure without an error")
    )
    outcome, status, following = await fail_attempt(
        conn,
        run,
        failure,
        item.get("retry"),
        bool(item.get("skipped_retrying")),
        in_place_lease if item.get("retry_in_place") else None,
    )
    result = {"run_id": run_id, "outcome": outcome, "status": API_STATUS[status]}
    if following is not None:
        following["ctx"]["environment"] = {"id": env.id, "slug": env.slug, "type": env.type}
        following["ctx"]["project"] = {"id": env.project_id, "ref": env.project_ref}
        result["next"] = following
    return result


async def complete(
    pool: Pool,
    env: Environment,
    instance_id: str,
    completions: list[Any],
    in_place_lease: float | None = None,
) -> list[dict[str, Any]]:
    """Record a batch of attempt results in one transaction.

    Plain successes (no metadata, output within the limit) are written by one set-based
    statement; every other item gets its own savepoint, so one bad item spoils nothing else.
    """
    plain: list[dict[str, Any]] = []
    others: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    for raw in completions:
        item = clean_completion(raw)  # worker.engine.completions: never an error of ours
        if isinstance(item, Refused):
            log.warning("completion refused: %s", item.reason)
            results.append(item.result())
        elif item["ok"] and not item.get("metadata"):
            plain.append(item)
        else:
            others.append(item)
    async with pool.connection() as conn, conn.transaction():
        if plain:
            try:
                async with conn.transaction():  # a savepoint: if it fails, item by item
                    rows = await (
                        await conn.execute(
                            Q.complete_successes,
                            {
                                "items": Jsonb(plain),
                                "run_ids": [item["run_id"] for item in plain],
                                "environment_id": env.id,
                                "instance_id": instance_id,
                            },
                        )
                    ).fetchall()
            except psycopg.Error:
                log.exception("completing %d successes at once failed; one by one", len(plain))
                others = plain + others
            else:
                finished = {row["id"] for row in rows}
                results += [
                    {"run_id": item["run_id"], "outcome": "RUN_FINISHED", "status": "COMPLETED"}
                    if item["run_id"] in finished
                    else {"run_id": item["run_id"], "outcome": "LEASE_LOST"}
                    for item in plain
                ]
        for item in others:
            results.append(await _complete_isolated(conn, env, instance_id, item, in_place_lease))
    return results


async def _complete_isolated(
    conn: Conn,
    env: Environment,
    instance_id: str,
    item: dict[str, Any],
    in_place_lease: float | None,
) -> dict[str, Any]:
    """One completion in its own savepoint. Should it fail anyway, it is tried once more
    without its metadata (the result matters more), then refused; never the whole batch."""
    for attempt in (item, {k: v for k, v in item.items() if k != "metadata"}):
        try:
            async with conn.transaction():
                return await _complete_one(conn, env, instance_id, attempt, in_place_lease)
        except EngineError as exc:
            return {"run_id": item["run_id"], "outcome": "REFUSED", "error": exc.message}
        except Exception:
            log.exception("completion of run %s failed", item["run_id"])
    return {"run_id": item["run_id"], "outcome": "REFUSED", "error": "internal error"}


async def release(pool: Pool, env: Environment, instance_id: str, run_ids: list[str]) -> list[str]:
    """Give leases back at once (graceful shutdown); the attempts do not count."""
    async with pool.connection() as conn, conn.transaction():
        rows = await (
            await conn.execute(
                Q.release_run,
                {"run_ids": run_ids, "instance_id": instance_id, "environment_id": env.id},
            )
        ).fetchall()
        for env_id in {str(r["environment_id"]) for r in rows}:
            await conn.execute(Q.notify_runs, {"environment_id": env_id})
    return [r["id"] for r in rows]


async def store_logs(pool: Pool, env: Environment, logs: list[Any]) -> int:
    """Store log lines, sanitised (worker.engine.completions.clean_log); should the batch
    still fail, each line is stored on its own, so one bad line loses only itself."""
    now = datetime.now(UTC).isoformat()
    rows = [row for row in (clean_log(entry, now) for entry in logs) if row is not None]
    if not rows:
        return 0

    async def insert(conn: Conn, lines: list[dict[str, Any]]) -> int:
        params = {
            "logs": Jsonb(lines),
            "environment_id": env.id,
            "run_ids": sorted({r["run_id"] for r in lines}),
        }
        async with conn.transaction():
            return (await conn.execute(Q.insert_logs, params)).rowcount

    async with pool.connection() as conn, conn.transaction():
        try:
            return await insert(conn, rows)
        except psycopg.Error:
            log.exception("storing %d log lines at once failed; line by line", len(rows))
        stored = 0
        for row in rows:
            try:
                stored += await insert(conn, [row])
            except psycopg.Error as exc:
                log.warning("log line of run %s dropped: %s", row["run_id"], exc)
        return stored
