"""Waitpoints and the run journal: durable waits, tokens, checkpoints (docs/architecture.md, "Waits
and checkpoints").

A run waits by recording a journal entry ``(seq, kind, waitpoint)``. Its executor waits for the
waitpoint in place for a while; past that it *checkpoints*: the run becomes WAITING_TO_RESUME,
its lease and concurrency slot are released, and when every waitpoint it waits on has completed
(a trigger in migration 0004) it is queued again with its original queue time and replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg.types.json import Jsonb

from worker.engine import public_tokens
from worker.engine.db import Conn, Pool, Row, fetch_all, fetch_one
from worker.engine.errors import Conflict, EngineError, NotFound
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.models import parse_duration
from worker.engine.notifier import WAITPOINTS, Notifier
from worker.engine.queries import Q

DEFAULT_KEY_TTL = timedelta(days=30)


async def create(
    conn: Conn,
    env: Environment,
    type_: str,
    *,
    complete_after: datetime | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: str | int | None = None,
    tags: list[str] | None = None,
    run_id: str | None = None,
    batch_id: str | None = None,
) -> tuple[Row, bool]:
    """Create a waitpoint in the caller's transaction; returns (row, is_cached).

    With an idempotency key an existing, unexpired waitpoint of the same type is returned
    instead (completed or not): an idempotent wait that already happened does not wait again.
    """
    ttl = (
        parse_duration(idempotency_key_ttl, "idempotencyKeyTTL")
        if idempotency_key_ttl is not None
        else DEFAULT_KEY_TTL
    )
    params = {
        "id": new_id("waitpoint"),
        "environment_id": env.id,
        "type": type_,
        "complete_after": complete_after,
        "idempotency_key": idempotency_key,
        "idempotency_key_expires_at": datetime.now(UTC) + ttl if idempotency_key else None,
        "tags": tags or [],
        "run_id": run_id,
        "batch_id": batch_id,
    }
    for _ in range(3):
        if idempotency_key is not None:
            existing = await fetch_one(conn, Q.find_idempotent_waitpoint, params)
            if existing:
                if existing["idempotency_key_expires_at"] > datetime.now(UTC):
                    return existing, True
                await conn.execute(Q.clear_waitpoint_key, {"id": existing["id"]})
        row = await fetch_one(conn, Q.insert_waitpoint, params)
        if row:
            return row, False
    raise EngineError("could not create the waitpoint under key contention; retry")


def callback_hash(secret: bytes, waitpoint_id: str) -> str:
    return hmac.new(secret, waitpoint_id.encode(), hashlib.sha256).hexdigest()


async def callback_url(pool: Pool, env: Environment, base_url: str, waitpoint_id: str) -> str:
    found = await public_tokens._secret(pool, env.id)
    assert found is not None
    digest = callback_hash(found[0], waitpoint_id)
    return f"{base_url}/api/v1/waitpoints/tokens/{waitpoint_id}/callback/{digest}"


async def verify_callback(pool: Pool, waitpoint_id: str, digest: str) -> Environment:
    """The environment of a token whose callback hash is right; raises otherwise."""
    async with pool.connection() as conn:
        row = await fetch_one(
            conn,
            "SELECT environment_id FROM waitpoints WHERE id = %(id)s::text",
            {"id": waitpoint_id},
        )
    found = await public_tokens._secret(pool, str(row["environment_id"])) if row else None
    if found is None or not hmac.compare_digest(callback_hash(found[0], waitpoint_id), digest):
        raise PermissionError("invalid callback signature")
    return found[1]


async def create_token(
    pool: Pool,
    env: Environment,
    *,
    timeout: str | int | datetime | None,
    idempotency_key: str | None,
    idempotency_key_ttl: str | int | None,
    tags: list[str],
) -> tuple[Row, bool]:
    timeout_at = None
    if timeout is not None:
        from worker.engine.models import parse_when

        timeout_at = parse_when(timeout, "timeout")
    async with pool.connection() as conn, conn.transaction():
        return await create(
            conn,
            env,
            "TOKEN",
            complete_after=timeout_at,
            idempotency_key=idempotency_key,
            idempotency_key_ttl=idempotency_key_ttl,
            tags=tags,
        )


async def complete_token(
    pool: Pool, env: Environment, waitpoint_id: str, output: str, output_type: str
) -> bool:
    """Complete a token; completing one that is already complete (or timed out) is harmless.
    Returns whether this call completed it."""
    params = {
        "id": waitpoint_id,
        "environment_id": env.id,
        "output": output,
        "output_type": output_type,
    }
    async with pool.connection() as conn, conn.transaction():
        done = await fetch_one(conn, Q.complete_waitpoint, params)
        if done is None:
            row = await fetch_one(conn, Q.get_waitpoint, params)
            if row is None or row["type"] != "TOKEN":
                raise NotFound(f"waitpoint token {waitpoint_id!r} not found in this environment")
    return done is not None


async def get(pool: Pool, env: Environment, waitpoint_id: str) -> Row:
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.get_waitpoint, {"id": waitpoint_id, "environment_id": env.id})
    if row is None:
        raise NotFound(f"waitpoint {waitpoint_id!r} not found in this environment")
    return row


async def list_tokens(
    pool: Pool,
    env: Environment,
    *,
    status: str | None,
    idempotency_key: str | None,
    tags: list[str] | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Row]:
    params = {
        "environment_id": env.id,
        "status": status,
        "idempotency_key": idempotency_key,
        "tags": tags,
        "after_created": after[0] if after else None,
        "after_id": after[1] if after else None,
        "limit": limit,
    }
    async with pool.connection() as conn:
        return await fetch_all(conn, Q.list_tokens, params)


async def wait_until_done(
    pool: Pool, notifier: Notifier, env: Environment, waitpoint_id: str, timeout_s: float
) -> Row:
    """Long-poll: the waitpoint once it is no longer WAITING, or as it is after ``timeout_s``."""
    deadline = time.monotonic() + max(0.0, min(timeout_s, 30.0))
    while True:
        woken = notifier.event(waitpoint_id, WAITPOINTS)
        row = await get(pool, env, waitpoint_id)
        remaining = deadline - time.monotonic()
        if row["status"] != "WAITING" or remaining <= 0:
            return row
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout=min(remaining, 1.0))


# --- the journal ------------------------------------------------------------------------------


async def _lock_leased(
    conn: Conn,
    env: Environment,
    run_id: str,
    instance_id: str | None,
    attempt_number: int | None = None,
) -> int:
    """Lock an executing run for a durable operation; returns its current attempt number.

    With ``attempt_number`` the operation is fenced to that attempt: a late request of an
    attempt that has already ended (its worker froze past its lease) writes nothing."""
    run = await fetch_one(conn, Q.lock_run_for_wait, {"run_id": run_id, "environment_id": env.id})
    if run is None:
        raise NotFound(f"run {run_id!r} not found in this environment")
    if run["status"] != "EXECUTING" or (
        instance_id is not None and str(run["lease_owner"]) != instance_id
    ):
        raise Conflict(f"run {run_id!r} is {run['status']}, not executing under this lease")
    if attempt_number is not None and run["attempt_number"] != attempt_number:
        raise Conflict(
            f"run {run_id!r} is on attempt {run['attempt_number']}, not attempt {attempt_number}"
        )
    return int(run["attempt_number"])


async def lock_parent(
    conn: Conn, env: Environment, run_id: str, attempt_number: int | None
) -> int:
    """The attempt of a parent journaling a child trigger (fenced like :func:`_lock_leased`
    when the parent says which attempt it is)."""
    if attempt_number is not None:
        return await _lock_leased(conn, env, run_id, None, attempt_number)
    run = await fetch_one(conn, Q.lock_run_for_wait, {"run_id": run_id, "environment_id": env.id})
    if run is None:
        raise NotFound(f"parent run {run_id!r} not found in this environment")
    return int(run["attempt_number"])


async def record(
    conn: Conn,
    run_id: str,
    attempt_number: int,
    seq: int,
    kind: str,
    key: str | None = None,
    waitpoint_id: str | None = None,
    outcome: Any = None,
) -> Row:
    """Add an entry to the attempt's journal, or check the one already at ``seq`` is the same
    operation (a replay after a checkpoint, or a retried request)."""
    params = {
        "run_id": run_id,
        "attempt_number": attempt_number,
        "seq": seq,
        "kind": kind,
        "key": key,
        "waitpoint_id": waitpoint_id,
        "outcome": Jsonb(outcome) if outcome is not None else None,
    }
    if await fetch_one(conn, Q.insert_journal_entry, params) is None:
        existing = await fetch_one(conn, Q.get_journal_entry, params)
        assert existing is not None
        if existing["kind"] != kind or existing["key"] != key:
            raise Conflict(
                f"NON_DETERMINISTIC: journal entry {seq} of run {run_id} (attempt "
                f"{attempt_number}) is {existing['kind']}({existing['key']}), the run now does "
                f"{kind}({key})"
            )
        return existing
    return params


async def wait_for(
    pool: Pool,
    env: Environment,
    run_id: str,
    instance_id: str | None,
    seq: int,
    kind: str,
    waitpoint_id: str | None = None,
    until: datetime | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: str | int | None = None,
    attempt_number: int | None = None,
) -> Row:
    """Block a run on a waitpoint (a new DURATION one when ``until`` is given); returns the
    waitpoint, which may already be complete."""
    async with pool.connection() as conn, conn.transaction():
        attempt = await _lock_leased(conn, env, run_id, instance_id, attempt_number)
        if until is not None:
            row, _ = await create(
                conn,
                env,
                "DURATION",
                complete_after=until,
                idempotency_key=idempotency_key,
                idempotency_key_ttl=idempotency_key_ttl,
            )
            waitpoint_id = row["id"]
        assert waitpoint_id is not None
        waitpoint = await fetch_one(
            conn, Q.get_waitpoint, {"id": waitpoint_id, "environment_id": env.id}
        )
        if waitpoint is None:
            raise NotFound(f"waitpoint {waitpoint_id!r} not found in this environment")
        entry = await record(conn, run_id, attempt, seq, kind, None, waitpoint_id)
        if entry.get("waitpoint_id") != waitpoint_id:
            raise Conflict(
                f"NON_DETERMINISTIC: journal entry {seq} of run {run_id} waits on "
                f"{entry.get('waitpoint_id')}, the run now waits on {waitpoint_id}"
            )
    return waitpoint


async def record_outcome(
    pool: Pool,
    env: Environment,
    run_id: str,
    instance_id: str | None,
    seq: int,
    kind: str,
    key: str | None,
    outcome: Any,
    attempt_number: int | None = None,
) -> Row:
    async with pool.connection() as conn, conn.transaction():
        attempt = await _lock_leased(conn, env, run_id, instance_id, attempt_number)
        return await record(conn, run_id, attempt, seq, kind, key, outcome=outcome)


async def checkpoint(
    pool: Pool,
    env: Environment,
    run_id: str,
    instance_id: str,
    attempt_number: int,
    execution_ms: int | None = None,
) -> bool:
    """Suspend a run whose waitpoints are still pending. Returns False (keep going) when
    they have all completed meanwhile, or raises when the lease is not held."""
    async with pool.connection() as conn, conn.transaction():
        await _lock_leased(conn, env, run_id, instance_id, attempt_number)
        blocking = await fetch_all(
            conn,
            Q.blocking_waitpoints,
            {"run_id": run_id, "attempt_number": attempt_number},
        )
        if not any(w["status"] == "WAITING" for w in blocking):
            return False
        suspended = await fetch_one(
            conn,
            Q.suspend_run,
            {
                "run_id": run_id,
                "instance_id": instance_id,
                "attempt_number": attempt_number,
                "execution_ms": execution_ms,
            },
        )
        if suspended is None:
            raise Conflict(f"run {run_id!r}: attempt {attempt_number} is not the leased one")
        await conn.execute(Q.notify_runs, {"environment_id": env.id})  # a slot is free
    return True


async def journals(conn: Conn, run_ids: list[str]) -> dict[str, list[Row]]:
    """The journals of the current attempts of ``run_ids`` (only runs that have one)."""
    rows = await fetch_all(conn, Q.journals_of, {"run_ids": run_ids})
    found: dict[str, list[Row]] = {}
    for r in rows:
        found.setdefault(r["run_id"], []).append(
            {
                "seq": r["seq"],
                "kind": r["kind"],
                "key": r["key"],
                "outcome": r["outcome"],
                "waitpoint": None
                if r["waitpoint_id"] is None
                else {
                    "id": r["waitpoint_id"],
                    "status": r["waitpoint_status"],
                    "output": r["waitpoint_output"],
                    "output_type": r["waitpoint_output_type"],
                    "output_is_error": r["waitpoint_output_is_error"],
                },
            }
        )
    return found
