"""The engine as one object: the pool, the notifier, the realtime hub and the settings, with a
method per action (in the style of Procrastinate's ``JobManager``).

Each action is written once, as a module function taking the pool first (``runs.retrieve``,
``schedules.create``, ...); :func:`action` binds it to the engine's pool, so
``engine.retrieve_run(env, run_id)`` is typed exactly as ``runs.retrieve`` is. The API's routes
call these methods and only translate HTTP to and from them.

The worker protocol's actions (register, dequeue, heartbeat, complete, release, logs) take
and return the typed messages of ``worker.common.protocol`` (docs/protocol.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Concatenate, Generic, ParamSpec, TypeVar, overload

from worker.common.protocol import CompletionResult, DequeuedRun, HeartbeatResponse
from worker.common.statuses import API_FINAL_STATUSES
from worker.engine import (
    alerts,
    batches,
    completing,
    deployments,
    env_vars,
    keys,
    lease_guards,
    leases,
    metadata,
    metrics,
    public_tokens,
    queues,
    realtime,
    registration,
    run_tags,
    runs,
    schedules,
    spans,
    task_defs,
    trace_view,
    triggering,
    waitpoints,
)
from worker.engine.db import Pool, Row, open_pool
from worker.engine.handoff import Handoff
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.leases import LeaseSettings
from worker.engine.models import TriggerSpec
from worker.engine.notifier import Notifier
from worker.engine.realtime import RealtimeHub
from worker.engine.request_keys import TriggeredRun
from worker.engine.services.alerter import run_alerter
from worker.engine.services.cron_trigger import run_cron_trigger
from worker.engine.services.expirer import run_expirer
from worker.engine.services.rescuer import run_rescuer
from worker.engine.services.retention import run_retention
from worker.engine.services.scheduler import run_scheduler
from worker.engine.services.versions import run_version_sweep
from worker.engine.services.waitpoint_timer import run_waitpoint_timer
from worker.engine.settings import EngineSettings

P = ParamSpec("P")
R = TypeVar("R")


class action(Generic[P, R]):
    """An engine method made of a module function whose first parameter is the pool."""

    def __init__(self, fn: Callable[Concatenate[Pool, P], Awaitable[R]]) -> None:
        self._fn = fn
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    @overload
    def __get__(self, engine: None, owner: type[Engine]) -> action[P, R]: ...
    @overload
    def __get__(self, engine: Engine, owner: type[Engine]) -> Callable[P, Awaitable[R]]: ...

    def __get__(self, engine: Engine | None,
                owner: type[Engine]) -> action[P, R] | Callable[P, Awaitable[R]]:
        if engine is None:
            return self
        fn, pool = self._fn, engine.pool

        def bound(*args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
            return fn(pool, *args, **kwargs)

        return bound


class Engine:
    def __init__(self, pool: Pool, notifier: Notifier, hub: RealtimeHub,
                 settings: EngineSettings) -> None:
        self.pool = pool
        self.notifier = notifier
        self.realtime = hub
        self.settings = settings
        self.lease = LeaseSettings(settings.lease_seconds, settings.heartbeat_seconds,
                                   settings.poll_fallback_seconds)
        self.run_vars = env_vars.RunVarCache()
        notifier.listen(env_vars.CHANNEL, self.run_vars.listener())
        self.task_defs = task_defs.TaskDefinitions()  # the plain trigger's one round trip
        notifier.listen(task_defs.CHANNEL, self.task_defs.listener())
        self.handoff = Handoff() if settings.direct_handoff else None
        self._services: list[asyncio.Task[None]] = []

    @classmethod
    async def open(cls, database_url: str, settings: EngineSettings, *,
                   pool_size: int = 10) -> Engine:
        """Open the pool; the notifier and services start with :meth:`start`."""
        pool = await open_pool(database_url, max_size=pool_size)
        # the hub connects on its first subscriber
        notifier = Notifier(database_url)
        return cls(pool, notifier, RealtimeHub(notifier), settings)

    async def start(self) -> None:
        """Start listening, then the background services (each a ``periodic`` loop)."""
        await self.notifier.start()
        self._services = [asyncio.create_task(service) for service in self._background()]

    def _background(self) -> list[Coroutine[Any, Any, None]]:
        s, pool = self.settings, self.pool
        return [
            run_rescuer(pool, s.rescuer_interval),
            run_scheduler(pool, s.scheduler_max_sleep),
            run_expirer(pool, s.expirer_interval),
            run_waitpoint_timer(pool, s.scheduler_max_sleep),
            run_cron_trigger(pool, s.cron_max_sleep),
            run_version_sweep(pool, s.rescuer_interval),
            run_alerter(pool, s.alerts),
            run_retention(pool, s.retention),
        ]

    async def stop(self) -> None:
        for service in self._services:
            service.cancel()
        for service in self._services:
            with contextlib.suppress(asyncio.CancelledError):
                await service
        await self.notifier.stop()
        await self.pool.close()

    # -- runs (runs.py, triggering.py)
    async def trigger(self, env: Environment, spec: TriggerSpec, request_key: str | None = None,
                      replayed_from: str | None = None) -> TriggeredRun:
        """Create one run; a long-poll of this process may get it leased at once (handoff.py).
        The realtime hub knows the run is running from before its commit (RealtimeHub.running:
        a ``waitMs`` retrieve of it need not read it first)."""
        run_id = new_id("run")
        self.realtime.expect(run_id, env.id)
        created = False
        try:
            response = await triggering.trigger(self.pool, env, spec, request_key, replayed_from,
                                                handoff=self.handoff, definitions=self.task_defs,
                                                run_id=run_id)
            created = response["id"] == run_id  # else an earlier run or answer, not this one
            return response
        finally:
            if not created:
                self.realtime.forget(run_id)

    batch_trigger = action(triggering.batch_trigger)
    retrieve_run = action(runs.retrieve)
    retrieve_batch_runs = action(runs.retrieve_batch)
    list_runs = action(runs.list_runs)
    cancel_run = action(runs.cancel)
    replay_run = action(runs.replay)
    reschedule_run = action(runs.reschedule)
    reset_idempotency_key = action(runs.reset_idempotency_key)
    add_tags = action(run_tags.add_tags)
    retrieve_metadata = action(metadata.retrieve)
    update_metadata = action(metadata.update)

    # -- batches (batches.py: the two-phase batch API)
    create_batch = action(batches.create)
    add_batch_items = action(batches.add_items)
    retrieve_batch = action(batches.retrieve)

    # -- waitpoints (waitpoints.py)
    create_token = action(waitpoints.create_token)
    complete_token = action(waitpoints.complete_token)
    retrieve_waitpoint = action(waitpoints.get)
    list_tokens = action(waitpoints.list_tokens)
    callback_url = action(waitpoints.callback_url)
    verify_callback = action(waitpoints.verify_callback)
    wait_for = action(waitpoints.wait_for)
    record_outcome = action(waitpoints.record_outcome)
    checkpoint = action(waitpoints.checkpoint)

    async def wait_run_final(
        self, env: Environment, run_id: str, wait_ms: int, *, children: bool = False,
        admit: Callable[[Row], None] | None = None,
        slot: Callable[[], AbstractAsyncContextManager[object]] | None = None,
    ) -> Row:
        """``GET /api/v3/runs/{id}?waitMs=N``: the run once final, or after ``wait_ms``."""
        return await runs.wait_final(self.pool, self.realtime, env, run_id, wait_ms,
                                     children=children, admit=admit, slot=slot)

    async def wait_until_done(self, env: Environment, waitpoint_id: str,
                              timeout_s: float) -> Row:
        return await waitpoints.wait_until_done(self.pool, self.notifier, env, waitpoint_id,
                                                timeout_s)

    # -- schedules (schedules.py)
    create_schedule = action(schedules.create)
    retrieve_schedule = action(schedules.retrieve)
    update_schedule = action(schedules.update)
    delete_schedule = action(schedules.delete)
    set_schedule_active = action(schedules.set_active)
    list_schedules = action(schedules.list_schedules)

    # -- queues (queues.py)
    list_queues = action(queues.list_queues)
    retrieve_queue = action(queues.retrieve)
    pause_queue = action(queues.set_paused)
    override_queue_limit = action(queues.override_limit)

    # -- the worker protocol (registration.py, leases.py, completing.py; docs/protocol.md)
    register_version = action(registration.register)
    #: refuses (EngineError) versions a dequeue may not name (before a stream's 200)
    check_versions = action(lease_guards.check_versions)
    release_leases = action(leases.release)
    store_logs = action(completing.store_logs)

    async def dequeue(self, env: Environment, instance_id: str, versions: list[str],
                      max_runs: int, wait_ms: int,
                      gone: Callable[[], Awaitable[bool]] | None = None) -> list[DequeuedRun]:
        return await leases.dequeue(self.pool, self.notifier, self.lease, env, instance_id,
                                    versions, max_runs, wait_ms, gone=gone,
                                    handoff=self.handoff)

    async def heartbeat(self, env: Environment, instance_id: str, run_ids: list[str],
                        stopping: bool = False) -> HeartbeatResponse:
        return await leases.heartbeat(self.pool, self.lease, env, instance_id, run_ids,
                                      stopping=stopping)

    async def complete(self, env: Environment, instance_id: str,
                       completions: Sequence[object]) -> list[CompletionResult]:
        """A batch of attempt results; a retry in place keeps its lease this long."""
        claimed: list[str] = []
        try:
            results, _, finals = await completing.complete_then_lease(
                self.pool, env, instance_id, completions, self.lease.lease_seconds,
                wanted=self._claimer(env, claimed))
            self._ended(env, results, finals)
        finally:
            self.realtime.release_final(claimed)
        await _answered_first(claimed)
        return results

    def _claimer(self, env: Environment, claimed: list[str]) -> Callable[[str], bool]:
        """Runs a ``waitMs`` retrieve of this process waits for: the completion reads them
        for it in its own round trip (run_reads.py); ``claimed`` collects them, to be
        released (RealtimeHub.claim_final) once the completion is over."""
        def wanted(run_id: str) -> bool:
            if self.realtime.claim_final(run_id, env.id):
                claimed.append(run_id)
                return True
            return False

        return wanted

    def _ended(self, env: Environment, results: list[CompletionResult],
               finals: completing.Finals) -> None:
        """Committed results: callers of this process waiting for these runs to end
        (``waitMs``) are woken now, not one notification later, with the run read after the
        commit when the completion read it for them."""
        for result in results:
            if result.status in API_FINAL_STATUSES and result.run_id:  # API statuses
                self.realtime.wake_final(result.run_id, finals.get(result.run_id), env.id)

    async def complete_and_lease(
        self, env: Environment, instance_id: str, completions: Sequence[object],
        versions: list[str], max_runs: int,
    ) -> tuple[list[CompletionResult], list[DequeuedRun]]:
        """``/complete`` with a ``lease`` (docs/protocol.md): the results, then up to
        ``max_runs`` runs leased as ``/dequeue`` with ``wait_ms=0`` would; for plain successes
        both go in one round trip. Versions foreign to ``env`` are refused before anything
        is recorded."""
        lease = await leases.lease_params(self.pool, self.lease, env, instance_id, versions,
                                          max_runs)
        claimed: list[str] = []
        try:
            results, rows, finals = await completing.complete_then_lease(
                self.pool, env, instance_id, completions, self.lease.lease_seconds, lease,
                wanted=self._claimer(env, claimed))
            self._ended(env, results, finals)
        finally:
            self.realtime.release_final(claimed)
        await _answered_first(claimed)
        if rows is None:  # not in the same round trip: the usual lease
            return results, await self.dequeue(env, instance_id, versions, max_runs, 0)
        return results, await leases.leased_runs(self.pool, env, instance_id, rows)

    # -- environment variables (env_vars.py)
    list_env_vars = action(env_vars.list_vars)
    retrieve_env_var = action(env_vars.get)

    async def put_env_vars(self, env: Environment, values: dict[str, str], *, secret: bool,
                           overwrite: bool) -> None:
        await self._vars_change(env, env_vars.put_many(self.pool, env, values, secret=secret,
                                                       overwrite=overwrite))

    async def create_env_var(self, env: Environment, name: str, value: str,
                             secret: bool) -> None:
        await self._vars_change(env, env_vars.create(self.pool, env, name, value, secret))

    async def update_env_var(self, env: Environment, name: str, value: str) -> None:
        await self._vars_change(env, env_vars.update(self.pool, env, name, value))

    async def delete_env_var(self, env: Environment, name: str) -> None:
        await self._vars_change(env, env_vars.delete(self.pool, env, name))

    async def _vars_change(self, env: Environment, change: Awaitable[None]) -> None:
        """This process drops what runs of ``env`` get at once, not when its notification
        comes back: a run triggered right after the change's 2xx gets the new values (other
        API processes drop theirs on the notification)."""
        try:
            await change
        finally:
            self.run_vars.drop(env.id)

    async def env_vars_for_runs(self, env: Environment) -> dict[str, str]:
        """What leased runs get (cached per process, dropped on change: env_vars.py)."""
        return await self.run_vars.for_runs(self.pool, env)

    # -- alert channels, deployments, task definitions (alerts.py, deployments.py)
    list_tasks = action(deployments.current_tasks)
    create_alert_channel = action(alerts.create_channel)
    list_alert_channels = action(alerts.list_channels)
    delete_alert_channel = action(alerts.delete_channel)
    register_deployment = action(deployments.register)
    retrieve_deployment = action(deployments.retrieve)
    promote_deployment = action(deployments.promote)

    # -- keys and public access tokens (keys.py, public_tokens.py)
    resolve_key = action(keys.resolve_key)

    async def list_api_keys(self, env: Environment, include_revoked: bool) -> list[keys.ApiKey]:
        async with self.pool.connection() as conn:
            return await keys.list_keys(conn, env.id, include_revoked)

    async def create_api_key(self, env: Environment, name: str, kind: str) -> keys.CreatedKey:
        async with self.pool.connection() as conn, conn.transaction():
            return await keys.create_key(conn, env, name, kind)

    async def revoke_api_key(self, env: Environment, key_id: str) -> keys.ApiKey:
        async with self.pool.connection() as conn, conn.transaction():
            return await keys.revoke_key(conn, env.id, key_id)

    async def rotate_api_key(self, env: Environment, key_id: str,
                             grace_seconds: float) -> keys.RotatedKey:
        async with self.pool.connection() as conn, conn.transaction():
            return await keys.rotate_key(conn, env.id, key_id, grace_seconds)

    async def rotate_signing_secret(self, env: Environment) -> keys.SecretRotation:
        async with self.pool.connection() as conn, conn.transaction():
            return await keys.rotate_signing_secret(conn, env.id)

    create_public_token = action(public_tokens.create_token)
    run_token = action(public_tokens.run_token)
    verify_public_token = action(public_tokens.verify)
    spend_public_token = action(public_tokens.spend)

    # -- traces, logs and metrics (spans.py, trace_view.py, metrics.py)
    store_spans = action(spans.store)
    trace_tree = action(trace_view.trace_tree)
    trace_span = action(trace_view.one_span)
    log_page = action(trace_view.log_page)

    async def gauges(self) -> list[Any]:
        return await metrics.gauges(self.pool, self.settings.metrics_cache_seconds)

    # -- realtime (realtime.py)
    realtime_run = action(realtime.run_row)
    realtime_tag_runs = action(realtime.runs_with_tag)
    realtime_batch_runs = action(realtime.batch_runs)
    append_stream = action(realtime.append_chunks)
    read_stream = action(realtime.read_chunks)
    run_brief = action(realtime.run_brief)


async def _answered_first(claimed: list[str]) -> None:
    """A completion that handed runs to ``waitMs`` retrieves of this process lets them answer
    their callers before it answers its worker: one turn of the loop (they have the row;
    nothing they do before their reply waits)."""
    if claimed:
        await asyncio.sleep(0)
