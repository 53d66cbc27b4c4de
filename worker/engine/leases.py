"""Leases (docs/protocol.md): dequeue, heartbeat, release.

A lease is (worker instance id, expiry). Registration is in ``registration.py``, completions
and logs in ``completing.py`` (completions are fenced on the lease, so a worker that lost it can
never record a result); the dequeued message is built in ``run_messages.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from worker.common.protocol import DequeuedRun, HeartbeatResponse
from worker.engine import metrics, waitpoints

# fail_attempt and store_logs were defined here; callers outside the worker protocol (the
# rescuer, the OTLP log route) still import them from this module
from worker.engine.completing import fail_attempt, store_logs
from worker.engine.db import Params, Pool, Row, one_trip
from worker.engine.errors import EngineError
from worker.engine.handoff import Handoff, wait_for_runs
from worker.engine.keys import Environment
from worker.engine.lease_guards import check_versions, deliverable
from worker.engine.notifier import Notifier
from worker.engine.queries import Q
from worker.engine.run_messages import dequeued_run
from worker.engine.triggering import LIVE_WORKER_SECONDS

__all__ = ["LeaseSettings", "dequeue", "fail_attempt", "heartbeat", "release", "store_logs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseSettings:
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    #: a waiting long-poll looks again after this long even with no notification
    poll_fallback_seconds: float = 1.0


#: version id -> its task ids (immutable once registered; bounded by the versions seen)
_VERSION_TASKS: dict[str, list[str]] = {}
async def lease_params(pool: Pool, settings: LeaseSettings, env: Environment,
                       instance_id: str, versions: list[str], max_runs: int) -> Params:
    """The parameters of the dequeue statement; refuses versions foreign to ``env``."""
    if not versions:
        raise EngineError("versions must list at least one registered version id")
    await check_versions(pool, env, versions)
    newest_tasks = _VERSION_TASKS.get(versions[0])
    if newest_tasks is None:
        async with pool.connection() as conn:
            cur = await conn.execute(Q.version_task_ids, {"version_id": versions[0]})
            newest_tasks = [r["task_id"] for r in await cur.fetchall()]
        if newest_tasks:  # a registered version never changes: cache it for good
            _VERSION_TASKS[versions[0]] = newest_tasks
    return {
        "environment_id": env.id,
        "newest": versions[0],
        "versions": versions,
        "newest_tasks": newest_tasks,
        "limit": max(1, min(max_runs, 100)),
        "instance_id": instance_id,
        "lease_seconds": settings.lease_seconds,
        "live_seconds": LIVE_WORKER_SECONDS,
    }


async def leased_runs(pool: Pool, env: Environment, instance_id: str,
                      rows: list[Row]) -> list[DequeuedRun]:
    """The messages of runs the dequeue statement leased (its leases committed)."""
    leased = [dequeued_run(row, env) for row in rows]
    # The attempt replays its own journal: a resumed one, or one handed back (release)
    # and leased again. A new attempt has none: a retry runs from the top.
    replaying = [str(row["id"]) for row in rows if row["has_journal"]]
    found: dict[str, list[Row]] = {}
    if replaying:
        async with pool.connection() as conn:
            found = await waitpoints.journals(conn, replaying)
    leased = [r.with_journal(found[r.run_id]) if r.run_id in found else r for r in leased]
    ready, given_back = deliverable(leased)
    if given_back:  # back to the queue at once: no run waits for its lease to expire
        await release(pool, env, instance_id, given_back)
    return ready


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
    handoff: Handoff | None = None,
) -> list[DequeuedRun]:
    """Lease up to ``max_runs`` runs; long-poll up to ``wait_ms`` when there are none. While it
    waits, a trigger of this process may lease for it (``handoff``, engine/handoff.py)."""
    params = await lease_params(pool, settings, env, instance_id, versions, max_runs)
    deadline = time.monotonic() + max(0, min(wait_ms, 30_000)) / 1000
    poller = (env.id, instance_id, *versions)
    waited = False
    while True:
        # the worker hung up while we waited: leasing now would strand the runs until expiry
        # (not asked before the first look: the request has only just arrived)
        if waited and gone is not None and await gone():
            return []
        woken = notifier.event(env.id)
        mark = notifier.mark(env.id)
        if waited or not wait_ms or mark is None or _DRAINED.get(poller) != mark:
            rows = await _look(pool, params)
            _remember(poller, mark if len(rows) < params["limit"] else None)
            if rows:
                return await leased_runs(pool, env, instance_id, rows)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        # poll fallback: a look at least this often, even with no notification
        rows = await wait_for_runs(handoff, woken, env.id, params,
                                   min(remaining, settings.poll_fallback_seconds),
                                   orphaned=lambda rows: _release_later(pool, env, instance_id,
                                                                        rows))
        waited = True
        if rows and gone is not None and await gone():
            _release_later(pool, env, instance_id, rows)
            return []
        if rows:
            return await leased_runs(pool, env, instance_id, rows)


async def _look(pool: Pool, params: Params) -> list[Row]:
    """One run of the dequeue statement: the runs it leased."""
    started = time.perf_counter()
    # One round trip (db.one_trip): the lease commits without waiting for its WAL flush.
    # A lease lost in a crash only puts the run back in the queue (leases are fenced, runs
    # are at-least-once); triggers and completions keep synchronous commits
    # (docs/benchmarks.md, "Durability").
    async with one_trip(pool, begin=True) as conn:
        await conn.execute(Q.async_commit)
        cursor = await conn.execute(Q.dequeue, params)
    rows = await cursor.fetchall()
    metrics.DEQUEUE_SECONDS.observe(time.perf_counter() - started)
    return rows


#: (environment, worker instance, versions) -> the notifier's mark taken before that poller's
#: last look, when that look left nothing it could lease (docs/architecture.md, "Direct
#: hand-off"): until a notification of the environment is heard, its next long-poll finds
#: nothing either and goes straight to waiting. Whatever makes runs leasable notifies
#: ``trigger_runs`` (a trigger of a queued run, a retry, a freed slot, a resume, a resumed
#: queue, a registration); a run a trigger inserts already leased to a waiting poll does not,
#: and needs not: it was handed over.
_DRAINED: dict[tuple[str, ...], tuple[int, int]] = {}


def _remember(poller: tuple[str, ...], mark: tuple[int, int] | None) -> None:
    if mark is None:
        _DRAINED.pop(poller, None)
        return
    if len(_DRAINED) >= 10_000:  # pollers of workers long gone: forget them all
        _DRAINED.clear()
    _DRAINED[poller] = mark


#: releases of runs leased for a long-poll that is gone (kept referenced until done)
_RELEASING: set[asyncio.Task[list[str]]] = set()


def _release_later(pool: Pool, env: Environment, instance_id: str, rows: list[Row]) -> None:
    """Runs a trigger handed to a long-poll that has gone meanwhile: straight back to the queue."""
    if not rows:
        return
    task = asyncio.ensure_future(release(pool, env, instance_id, [str(r["id"]) for r in rows]))
    _RELEASING.add(task)
    task.add_done_callback(_RELEASING.discard)


async def heartbeat(
    pool: Pool,
    settings: LeaseSettings,
    env: Environment,
    instance_id: str,
    run_ids: list[str],
    stopping: bool = False,
) -> HeartbeatResponse:
    params = {
        "run_ids": run_ids,
        "instance_id": instance_id,
        "environment_id": env.id,
        "lease_seconds": settings.lease_seconds,
    }
    # one round trip (db.one_trip): the lease renewal, the worker's touch, the commit
    async with one_trip(pool, begin=True) as conn:
        await conn.execute(Q.async_commit)  # a lost heartbeat only shortens a lease
        held_cur = await conn.execute(Q.heartbeat, params)
        if stopping:  # a worker shutting down serves nothing: its runs may migrate at once
            await conn.execute(Q.worker_stopped, {"instance_id": instance_id})
        else:
            canceled_cur = await conn.execute(
                Q.canceled_among, {"run_ids": run_ids, "environment_id": env.id})
            touch = {"instance_id": instance_id, "live_seconds": LIVE_WORKER_SECONDS}
            worker_cur = await conn.execute(Q.touch_worker, touch)
    worker = None if stopping else await worker_cur.fetchone()
    if worker and worker["was_gone"]:  # back after a silence: release what waited for it
        # (after the commit; should this not happen, the version sweep releases them)
        async with pool.connection() as conn, conn.transaction():
            tasks = await (
                await conn.execute(Q.version_task_ids, {"version_id": worker["version_id"]})
            ).fetchall()
            await conn.execute(
                Q.release_version_waits,
                {"environment_id": env.id, "task_ids": [t["task_id"] for t in tasks]},
            )
            await conn.execute(Q.notify_runs, {"environment_id": env.id})
    held = {r["id"] for r in await held_cur.fetchall()}
    lost = [r for r in run_ids if r not in held]
    if stopping:
        return HeartbeatResponse(lost)
    # why each lost run was lost: a cancel (the task gets on_cancel) or anything else (stop)
    canceled = [r["id"] for r in await canceled_cur.fetchall() if r["id"] not in held]
    return HeartbeatResponse(lost, canceled)


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
