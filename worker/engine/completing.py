"""Recording attempt results and log lines (docs/protocol.md, ``/complete`` and ``/logs``).

Completions are fenced on (run, instance, attempt), so a worker that lost its lease (expired,
canceled) can never record a result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import psycopg
from psycopg import AsyncCursor
from psycopg.pq import ExecStatus
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from worker.common.errors import internal_error
from worker.common.protocol import Completion, CompletionResult, DequeuedRun, Outcome, Wire
from worker.common.statuses import API_STATUS, FINAL_STATUSES
from worker.engine import metadata as run_metadata
from worker.engine import run_reads
from worker.engine.completions import Refused, clean_completion, clean_log
from worker.engine.db import Conn, Params, Pool, Row, end_trip, one_statement
from worker.engine.errors import EngineError
from worker.engine.keys import Environment
from worker.engine.models import MAX_OUTPUT_BYTES
from worker.engine.queries import Q
from worker.engine.retrying import decide
from worker.engine.run_messages import dequeued_run

log = logging.getLogger(__name__)

#: retries due sooner than this run again on the same worker, keeping the lease
#: (docs/run-states.md, "Retries and the journal")
IN_PLACE_RETRY_MS = 30_000


@dataclass(frozen=True)
class InPlace:
    """The worker can run a short retry itself: the lease it keeps, in its environment."""

    env: Environment
    lease_seconds: float


async def fail_attempt(
    conn: Conn,
    run: DictRow,
    error: Wire,
    worker_retry: Wire | None = None,
    skipped_retrying: bool = False,
    in_place: InPlace | None = None,
) -> tuple[Outcome, str, DequeuedRun | None]:
    """Record a failed attempt of a run locked by the caller.

    Returns (outcome, internal status, next): with ``in_place`` (the worker asked for it) a
    retry due within ``IN_PLACE_RETRY_MS`` keeps the lease and starts the next attempt at once
    (``RETRY_IMMEDIATELY``, ``next`` = that attempt's run); otherwise it is requeued.
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
        and in_place is not None
        and outcome.delay_ms < IN_PLACE_RETRY_MS
        and outcome.machine is None
    ):
        params = {
            "run_id": run["id"],
            "error": Jsonb(error),
            "lease_seconds": in_place.lease_seconds,
            "delay_ms": outcome.delay_ms,
        }
        row = await (await conn.execute(Q.retry_in_place, params)).fetchone()
        if row is not None:
            following = replace(dequeued_run(row, in_place.env), delay_ms=outcome.delay_ms)
            return Outcome.RETRY_IMMEDIATELY, "EXECUTING", following
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
        return Outcome.RETRY_QUEUED, status, None
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
    return Outcome.RUN_FINISHED, outcome.status, None


def _finished(run_id: str) -> CompletionResult:
    return CompletionResult(run_id, Outcome.RUN_FINISHED, "COMPLETED")


async def _complete_one(
    conn: Conn,
    env: Environment,
    instance_id: str,
    item: Completion,
    in_place_lease: float | None,
) -> CompletionResult:
    run_id = item.run_id
    fence = {
        "run_id": run_id,
        "instance_id": instance_id,
        "environment_id": env.id,
        "attempt_number": item.attempt_number,
    }
    run = await (await conn.execute(Q.lock_leased_run, fence)).fetchone()
    if run is None:
        return CompletionResult(run_id, Outcome.LEASE_LOST)
    if item.metadata:  # the executor's final metadata flush
        await run_metadata.apply_completion(conn, env, run_id, item.metadata)
    if item.ok:
        output = item.output
        if output is not None and len(output) > MAX_OUTPUT_BYTES:
            error = internal_error(
                "TASK_OUTPUT_ERROR",
                f"output is {len(output)} bytes; the limit is {MAX_OUTPUT_BYTES} bytes (10 MiB)",
            )
            outcome, status, _ = await fail_attempt(conn, run, error, skipped_retrying=True)
            return CompletionResult(run_id, outcome, API_STATUS[status])
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
                "output_type": item.output_type or "application/json",
                "error": None,
            },
        )
        return _finished(run_id)
    failure = (
        item.error
        if item.error is not None and "type" in item.error
        else internal_error("TASK_RUN_CRASHED", "the worker sent a failure without an error")
    )
    outcome, status, following = await fail_attempt(
        conn,
        run,
        failure,
        None if item.retry_delay_ms is None else {"delay_ms": item.retry_delay_ms},
        item.skipped_retrying,
        InPlace(env, in_place_lease) if item.retry_in_place and in_place_lease is not None
        else None,
    )
    return CompletionResult(run_id, outcome, API_STATUS[status], next=following)


async def complete(
    pool: Pool,
    env: Environment,
    instance_id: str,
    completions: Sequence[object],
    in_place_lease: float | None = None,
) -> list[CompletionResult]:
    """Record a batch of attempt results in one transaction.

    Plain successes (no metadata, output within the limit) are written by one set-based
    statement; every other item gets its own savepoint, so one bad item spoils nothing else.
    """
    return (await complete_then_lease(pool, env, instance_id, completions, in_place_lease))[0]


#: runs read after their completion for a waiting reader: run id -> run_reads.assemble's row
Finals = dict[str, Row]


async def complete_then_lease(
    pool: Pool,
    env: Environment,
    instance_id: str,
    completions: Sequence[object],
    in_place_lease: float | None = None,
    lease: Params | None = None,
    wanted: Callable[[str], bool] | None = None,
) -> tuple[list[CompletionResult], list[Row] | None, Finals]:
    """:func:`complete`, then (``lease``: the dequeue statement's parameters) a lease in a
    transaction of its own, after the completions' commit. Returns the results, the rows
    the dequeue statement leased (None when it did not run: the caller leases apart) and the
    finished runs ``wanted`` asked for (a reader waits for them), read after the commit in the
    same round trip (plain successes only; the others are read by their readers)."""
    plain: list[Completion] = []
    others: list[Completion] = []
    results: list[CompletionResult] = []
    for raw in completions:
        item = clean_completion(raw)  # worker.engine.completions: never an error of ours
        if isinstance(item, Refused):
            log.warning("completion refused: %s", item.reason)
            results.append(item.result())
        elif item.ok and not item.metadata:
            plain.append(item)
        else:
            others.append(item)
    if plain and not others:  # the common case: one round trip
        reads = [c.run_id for c in plain if wanted(c.run_id)] if wanted is not None else []
        try:
            if lease is None and len(plain) == 1:  # the latency path
                rows, finals = await _one_success(pool, env, instance_id, plain[0], bool(reads))
                return results + _plain_results(plain, rows), None, finals
            rows, leased, finals = await _plain_then_lease(
                pool, env, _plain_statement(env, instance_id, plain), lease, reads)
            return results + _plain_results(plain, rows), leased, finals
        except psycopg.Error:  # rolled back: item by item, below
            log.exception("completing %d successes at once failed; one by one", len(plain))
            plain, others = [], plain
    async with pool.connection() as conn, conn.transaction():
        if plain:
            try:
                async with conn.transaction():  # a savepoint: if it fails, item by item
                    rows = await (await conn.execute(
                        *_plain_statement(env, instance_id, plain))).fetchall()
            except psycopg.Error:
                log.exception("completing %d successes at once failed; one by one", len(plain))
                others = plain + others
            else:
                results += _plain_results(plain, rows)
        for item in others:
            results.append(await _complete_isolated(conn, env, instance_id, item, in_place_lease))
    return results, None, {}


async def _one_success(pool: Pool, env: Environment, instance_id: str, one: Completion,
                       read: bool) -> tuple[list[Row], Finals]:
    """One plain success and no lease: one statement, committed synchronously, without a
    pipeline. With ``read`` (a reader waits for the run) the statement also returns the run as
    a retrieve reads it (complete_success_read): no statement after it."""
    query, params = _plain_statement(env, instance_id, [one])
    rows = await one_statement(pool, Q.complete_success_read if read else query, params)
    run = run_reads.assemble(dict(rows[0]), children=True) if read and rows else None
    return rows, ({run["id"]: run} if run is not None else {})


async def _plain_then_lease(pool: Pool, env: Environment, statement: tuple[str, Wire],
                            lease: Params | None, reads: list[str]
                            ) -> tuple[list[Row], list[Row] | None, Finals]:
    """Plain successes, and the lease asked for, in one pipeline sent at once (one round
    trip; see db.one_trip): the completions commit synchronously (durable once answered),
    then ``reads`` (run_reads: what a waiting retrieve would read now), then the lease
    commits in a transaction of its own without waiting for its WAL flush (leases.dequeue
    says why). Raises psycopg.Error if the completions did not commit; a read or lease that
    failed after them is logged and returned empty (the readers read, the caller leases).

    Without a lease the completions and the reads are one implicit transaction (db.one_trip,
    two statements fewer): the reads see the completions, and any error rolls all back, so it
    is raised (the caller completes item by item)."""
    committed = leased = None
    sent: list[AsyncCursor[Row]] = []
    async with pool.connection() as conn:
        await conn.set_autocommit(True)  # our transactions are the pipeline's (db.one_trip)
        try:
            async with conn.pipeline():
                if lease is not None:
                    await conn.execute("BEGIN")
                done = await conn.execute(*statement)
                if lease is not None:
                    committed = await conn.execute("COMMIT")
                for run_id in reads:
                    sent.append(await run_reads.send(conn, run_id, env.id))
                if lease is not None:
                    await conn.execute("BEGIN")
                    await conn.execute(Q.async_commit)
                    leased = await conn.execute(Q.dequeue, lease)
                    await conn.execute("COMMIT")
        except psycopg.Error:
            result = committed.pgresult if committed is not None else None
            if result is None or result.status != ExecStatus.COMMAND_OK:
                raise
            log.exception("reading or leasing after a completion failed; leasing apart")
            leased, sent = None, []
        finally:
            await end_trip(conn)
    finals: Finals = {}
    for one in sent:
        row = run_reads.assemble(await one.fetchone(), children=True)
        if row is not None and row["status"] in FINAL_STATUSES:
            finals[row["id"]] = row
    return await done.fetchall(), (await leased.fetchall() if leased is not None else None), finals


def _plain_statement(env: Environment, instance_id: str, plain: list[Completion]
                     ) -> tuple[str, Wire]:
    """The statement completing plain successes, and its parameters (one run: by primary key)."""
    if len(plain) == 1:
        [one] = plain
        return Q.complete_success, {
            "run_id": one.run_id, "attempt_number": one.attempt_number, "output": one.output,
            "output_type": one.output_type, "environment_id": env.id, "instance_id": instance_id}
    items = [{"run_id": c.run_id, "attempt_number": c.attempt_number,
              "output": c.output, "output_type": c.output_type} for c in plain]
    return Q.complete_successes, {"items": Jsonb(items), "run_ids": [c.run_id for c in plain],
                                  "environment_id": env.id, "instance_id": instance_id}


def _plain_results(plain: list[Completion], rows: list[DictRow]) -> list[CompletionResult]:
    finished = {row["id"] for row in rows}
    return [_finished(c.run_id) if c.run_id in finished
            else CompletionResult(c.run_id, Outcome.LEASE_LOST) for c in plain]


async def _complete_isolated(
    conn: Conn,
    env: Environment,
    instance_id: str,
    item: Completion,
    in_place_lease: float | None,
) -> CompletionResult:
    """One completion in its own savepoint. Should it fail anyway, it is tried once more
    without its metadata (the result matters more), then refused; never the whole batch."""
    for attempt in (item, replace(item, metadata=None)):
        try:
            async with conn.transaction():
                return await _complete_one(conn, env, instance_id, attempt, in_place_lease)
        except EngineError as exc:
            return CompletionResult(item.run_id, Outcome.REFUSED, error=exc.message)
        except Exception:
            log.exception("completion of run %s failed", item.run_id)
    return CompletionResult(item.run_id, Outcome.REFUSED, error="internal error")


async def store_logs(pool: Pool, env: Environment, logs: Sequence[object]) -> int:
    """Store log lines, sanitised (worker.engine.completions.clean_log); should the batch
    still fail, each line is stored on its own, so one bad line loses only itself."""
    now = datetime.now(UTC).isoformat()
    rows = [row for row in (clean_log(entry, now) for entry in logs) if row is not None]
    if not rows:
        return 0

    async def insert(conn: Conn, lines: list[Wire]) -> int:
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
