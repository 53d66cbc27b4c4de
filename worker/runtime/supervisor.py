"""The supervisor: leases runs from the API and runs them on warm executors.

One asyncio (uvloop) process per worker replica (docs/architecture.md, "Process model"). Its
parts, each given only what it needs: :class:`~worker.runtime.versions.Versions` (zygotes, the
registered manifest, warm pools, hot reload), :mod:`~worker.runtime.leasing` (``/dequeue``
and one heartbeat call for every held lease), the ``inflight.RunTable`` of held runs and the
:class:`~worker.runtime.reporter.Reporter` (batched completions and logs). The supervisor itself
starts runs on executors, replaces executors that die (failing just their attempt), enforces
max_duration and machine memory, and on stop hands back unfinished leases (``/release``) and
kills every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import shutil
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from functools import partial
from pathlib import Path

from worker.common import errors as codes
from worker.common.protocol import Completion, DequeuedRun, Wire
from worker.runtime import leasing, worker_metrics
from worker.runtime.api_client import WorkerApi
from worker.runtime.background import Background
from worker.runtime.crash_spans import record_died_attempt
from worker.runtime.inflight import InFlight, RunTable, machine_memory
from worker.runtime.outcomes import failed_completion
from worker.runtime.pool import Executor, ExecutorDied, ExecutorServer, Pool, PoolUnavailable
from worker.runtime.reload import watch_project
from worker.runtime.reporter import Finished, Reporter
from worker.runtime.settings import WorkerSettings
from worker.runtime.slots import Slots
from worker.runtime.versions import Versions

EventSink = Callable[[Wire], None]
#: runs left waiting for an executor when a lingering /complete goes (Reporter.linger)
LINGER_RESERVE = 2

__all__ = ["EventSink", "InFlight", "Supervisor"]


class Supervisor:
    def __init__(self, project_dir: Path, settings: WorkerSettings, *, watch: bool,
                 on_event: EventSink | None, stop: asyncio.Event,
                 force: asyncio.Event | None = None) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.settings = settings
        self.instance_id = str(uuid.uuid4())
        self.api = WorkerApi(settings.api_url, settings.secret_key, self.instance_id)
        self.watch = watch
        self._on_event = on_event
        self.stop = stop
        #: set by a second SIGTERM/SIGINT: stop now, hand every lease back
        self.force = force or asyncio.Event()
        self.stopping = False
        self.tmpdir = tempfile.mkdtemp(prefix="trigger-w-")
        self.server = ExecutorServer(os.path.join(self.tmpdir, "executors.sock"))
        self.capacity = asyncio.Event()
        self.background = Background()
        self.runs = RunTable()
        #: leased runs (also in ``runs.starting``) waiting for an executor, in lease order
        self.waiting: deque[DequeuedRun] = deque()
        self.slots = Slots(lambda: self.versions.current, settings.prefetch,
                           self.runs.starting, lambda: self.stopping, self.capacity)
        self.reporter = Reporter(self.api, self.runs, self.emit, self._retry_here,
                                 slots=self.slots, leased=self._leased, linger=self._linger,
                                 linger_ms=settings.complete_linger_ms)
        self.versions = Versions(self.project_dir, self.server, self.api, settings,
                                 emit=self.emit, on_frame=self.reporter.on_frame,
                                 on_change=self._pool_changed, on_free=self._dispatch,
                                 stopping=lambda: self.stopping,
                                 background=self.background)

    def emit(self, event: Wire) -> None:
        if self._on_event is None:
            return
        with contextlib.suppress(Exception):  # a broken printer must not break the worker
            self._on_event(event)

    def gauges(self) -> worker_metrics.WorkerGauges:
        """What ``trigger worker --metrics-port`` serves (read from the scrape thread)."""
        return worker_metrics.gauges(self.versions.pools(), self.versions.current,
                                     self.versions.retired_recycles,
                                     self.versions.retired_kills, len(self.runs),
                                     self.reporter.dropped_logs)

    # --- running -----------------------------------------------------------------------

    async def _leased(self, runs: list[DequeuedRun]) -> None:
        """Start leased runs (``/dequeue``, ``/complete``): those idle executors can take are
        written to them now, before the caller builds its next request; the others wait in
        :attr:`waiting`, each dispatched the moment an executor frees (:meth:`_dispatch`)."""
        starting = self.runs.starting
        for run in runs:
            starting.add(run.run_id)
        if self.stopping:
            for run in runs:
                starting.discard(run.run_id)
            await self.reporter.release([run.run_id for run in runs])
            return
        self.waiting.extend(runs)
        self._dispatch()
        if self.waiting and (pool := self.versions.current) is not None:
            pool.want(len(self.waiting))

    def _dispatch(self) -> None:
        """Runs waiting for an executor go to idle ones of the current pool, in lease order.
        Called when runs are leased and the moment an executor frees (its completion frame
        has just arrived: the next run's frame goes out before that completion is handled)."""
        waiting = self.waiting
        while waiting and not self.stopping:
            pool = self.versions.current
            if pool is None:
                return
            run = waiting[0]
            if pool.version_id != run.version_id and self.versions.reloading:
                waiting.popleft()
                self.background.start(self._start(run))  # waits for the reload's switch
                continue
            ex = pool.try_acquire(run)
            if ex is None:
                return
            waiting.popleft()
            self._launch(run, pool, ex)

    def _linger(self) -> bool:
        """May the completions queued wait for more: more runs wait for an executor than
        the reserve that keeps the executors busy while the next ``/complete`` (which leases
        their successors) is in flight."""
        return len(self.waiting) > LINGER_RESERVE and not self.stopping

    def _pool_changed(self) -> None:
        """An executor connected or exited, or the current version changed."""
        if self.waiting:
            self._dispatch()
        self.capacity.set()

    async def _watch_waiting(self) -> None:
        """Runs that wait on a pool that cannot take them (its zygote is gone and nothing it
        runs will free an executor) are handed back after a minute; and a safety net for the
        notifications that dispatch them."""
        since: float | None = None
        while not self.stopping:
            await asyncio.sleep(1.0)
            pool = self.versions.current
            if not self.waiting or pool is None:
                since = None
                continue
            self._dispatch()
            if not self.waiting:
                since = None
                continue
            pool.want(len(self.waiting))
            if pool.free_slots() > 0 or pool.busy_count() > 0:
                since = None
            elif since is None:
                since = time.monotonic()
            elif time.monotonic() - since > 60 and not self.stopping:
                runs = list(self.waiting)
                self.waiting.clear()
                for run in runs:
                    self.runs.starting.discard(run.run_id)
                self.emit({"type": "error", "message": f"no executor of version {pool.version}"
                           f" available; handing {len(runs)} run(s) back"})
                await self.reporter.release([run.run_id for run in runs])
                since = None

    def _retry_here(self, run: DequeuedRun) -> None:
        """The engine kept the lease for a short retry: run the next attempt here after its
        delay, on a warm executor, heartbeating it meanwhile (it holds its slot)."""
        self.runs.starting.add(run.run_id)

        async def later() -> None:
            await asyncio.sleep(max(0, run.delay_ms or 0) / 1000)
            if self.stopping:
                self.runs.starting.discard(run.run_id)
                await self.reporter.release([run.run_id])
                return
            await self._start(run)

        self.background.start(later())

    async def _start(self, run: DequeuedRun) -> None:
        # The engine hands us runs of the version we listed (in-place retries keep theirs;
        # they run on the current code too); in-flight runs stay where they are.
        run_id = run.run_id
        pool = await self._pool_for(run)
        try:
            ex = await pool.acquire(run)
        except PoolUnavailable as exc:
            self.runs.starting.discard(run_id)
            self.emit({"type": "error", "message": f"{exc}; handing run {run_id} back"})
            await self.reporter.release([run_id])
            return
        self._launch(run, pool, ex)

    def _launch(self, run: DequeuedRun, pool: Pool, ex: Executor) -> None:
        """``run`` on ``ex`` (acquired for it): its frame is written before this returns; the
        completion is handled by :meth:`_ended` (a callback: no task per run)."""
        done = pool.start(ex, run)
        flight = InFlight(run, pool, ex, memory_limit=machine_memory(run)
                          if self.settings.enforce_machine_memory else None)
        self.runs.inflight[run.run_id] = flight
        self.runs.starting.discard(run.run_id)
        self.emit({"type": "run_started", "run_id": run.run_id, "task_id": run.task_id,
                   "attempt": run.attempt_number, "version": pool.version, "pid": ex.pid})
        limit = run.max_duration
        if limit and limit < 2**31 - 1:
            # the backstop behind the executor's own limit (RunTable.enforce: no timer per run)
            flight.budget = float(limit) + self.settings.max_duration_grace
        done.add_done_callback(partial(self._ended, flight))

    async def _pool_for(self, run: DequeuedRun) -> Pool:
        """The current pool. A run leased for a version a reload has registered but not yet
        switched to (an orphaned run migrates to the newest registered version) waits for that
        switch, so the version it records is the code it runs."""
        pool = self.versions.current
        assert pool is not None
        deadline = time.monotonic() + 10
        while (pool.version_id != run.version_id and self.versions.reloading
               and time.monotonic() < deadline):
            await asyncio.sleep(0.01)
            pool = self.versions.current or pool
        return pool

    def _ended(self, flight: InFlight, done: asyncio.Future[Wire]) -> None:
        """The attempt on ``flight`` ended (its executor is free, or dead): report it."""
        run = flight.run
        completion: Completion | None
        try:
            sent: Wire = done.result()["completion"]
            # None: checkpointed (the executor's frame says "suspended")
            completion = None if sent.get("suspended") else Completion.from_wire(sent)
        except ExecutorDied as died:
            completion = flight.died_completion(died)
            # the executor could not close its attempt span: close it here (crash_spans.py)
            self.background.start(record_died_attempt(
                self.api, run, flight.started, completion.error or {}, self.emit))
        except BaseException as exc:  # a cancelled future too: never lose a run
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_RUN_CRASHED, f"{type(exc).__name__}: {exc}"), skipped=False)
        self.runs.inflight.pop(flight.run_id, None)
        self.slots.observe(time.monotonic() - flight.started)
        if flight.lost:
            self.capacity.set()
            return  # the engine no longer gives this run to us: never report it
        if completion is None:
            # checkpointed: the engine already released the lease; it resumes elsewhere
            self.capacity.set()
            self.emit({"type": "run_suspended", "run_id": flight.run_id,
                       "task_id": run.task_id})
            return
        if completion.duration_ms is None:
            completion = replace(
                completion, duration_ms=int((time.monotonic() - flight.started) * 1000))
        self.reporter.finished(Finished(completion, run.task_id, run.max_attempts))
        self.capacity.set()

    # --- leases ------------------------------------------------------------------------

    def _held(self) -> list[str]:
        return self.runs.held() + self.reporter.held()

    def _lose(self, run_id: str, canceled: bool = True) -> None:
        """The engine no longer gives ``run_id`` to us.

        Canceled: the executor is told (``on_cancel`` runs, the task is cancelled) and after
        the cancel grace its process group is killed if the run is still going. Otherwise (the
        lease expired and the run was rescued elsewhere) the executor is killed at once: the
        attempt belongs to another worker now.
        """
        flight = self.runs.get(run_id)
        self.reporter.forget(run_id)
        if flight is None or flight.lost:
            return
        flight.lost = True
        if flight.executor.run is not flight.run:
            # the attempt already ended here (e.g. it checkpointed: the engine released the
            # lease first) and the executor may be running another run: leave it alone
            return
        if not canceled:
            flight.pool.kill(flight.executor)
            self.emit({"type": "run_lost", "run_id": run_id,
                       "task_id": flight.run.task_id, "reason": "lease lost"})
            return
        flight.executor.cancel()
        self.emit({"type": "run_lost", "run_id": run_id, "task_id": flight.run.task_id})
        self.background.start(flight.kill_after(self.settings.cancel_grace))

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.server.start()
        if self.settings.metrics_port:
            worker_metrics.serve(self.gauges, self.settings.metrics_port,
                                 self.settings.metrics_addr)
        loops: list[asyncio.Task[None]] = []
        dequeue: asyncio.Task[None] | None = None
        try:
            self.versions.current = await self.versions.boot()
            loop = asyncio.get_running_loop()
            services: list[Coroutine[object, object, None]] = [
                leasing.heartbeat_loop(self.api, interval=lambda: self.versions.heartbeat_seconds,
                                       held=self._held, lose=self._lose, emit=self.emit),
                self.reporter.flush_loop(), self.versions.janitor(), self.runs.enforce(),
                self._announce_ready(), self._watch_waiting()]
            if self.watch:
                services.append(watch_project(
                    self.project_dir, dirs=self.versions.dirs, stop=self.stop,
                    stopping=lambda: self.stopping, emit=self.emit,
                    reload=self.versions.reload))
            loops = [loop.create_task(service) for service in services]
            dequeue = loop.create_task(leasing.dequeue_loop(
                self.api, stopping=lambda: self.stopping, slots=self.slots,
                version_id=lambda: self.slots.version_id() or "",
                defer=lambda: self.slots.defer_poll(bool(self.reporter.completions)),
                wait_ms=self.settings.dequeue_wait_ms, leased=self._leased, emit=self.emit,
                stream=self.settings.dequeue_stream))
            stop_wait = loop.create_task(self.stop.wait())
            await asyncio.wait({dequeue, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if dequeue.done() and (error := dequeue.exception()) is not None:
                raise error
        finally:
            await self._shutdown(dequeue, loops)

    async def _announce_ready(self) -> None:
        """Emit ``ready`` once the first pool is warm (every executor forked and connected)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stopping:
            pool = self.versions.current
            if pool is not None and len(pool.executors) >= pool.size:
                self.emit({"type": "ready", "version": pool.version, "concurrency": pool.size,
                           "instance_id": self.instance_id})
                gc.freeze()  # start-up's objects out of the collector (a full one: 7-20 ms)
                return
            await asyncio.sleep(0.02)

    async def _wait_unless_forced(self, awaitable: Awaitable[object], timeout: float) -> None:
        force = asyncio.ensure_future(self.force.wait())
        try:
            await asyncio.wait({asyncio.ensure_future(awaitable), force}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()

    async def _shutdown(self, dequeue: asyncio.Task[None] | None,
                        loops: list[asyncio.Task[None]]) -> None:
        """Stop leasing; give running attempts ``shutdown_grace`` seconds to finish; hand the
        rest back at once (``/release``) so another replica starts them without waiting for the
        lease to expire. ``force`` (a second signal) cuts every wait short."""
        self.stopping = True
        inflight = self.runs.inflight
        self.emit({"type": "stopping", "running": len(inflight)})
        deadline = time.monotonic() + self.settings.shutdown_grace
        if dequeue is not None and not dequeue.done():
            # Let an open long-poll return: runs it brings are released at once, whereas
            # cancelling it could leave runs leased to us that we never hear of.
            # (the long poll ends within wait_ms: the grace period does not shorten this)
            await self._wait_unless_forced(asyncio.shield(dequeue),
                                           self.settings.dequeue_wait_ms / 1000 + 1)
            dequeue.cancel()
            with contextlib.suppress(BaseException):
                await dequeue
        while inflight and time.monotonic() < deadline and not self.force.is_set():
            await self._wait_unless_forced(asyncio.sleep(0.05), 0.05)
        if self.force.is_set():
            self.emit({"type": "stopping_now", "running": len(inflight)})
        leftover = [f for f in inflight.values() if not f.lost]
        for flight in leftover:
            flight.lost = True
            flight.pool.kill(flight.executor)
        with contextlib.suppress(Exception):
            await self.reporter.flush_completions()
        self.waiting.clear()  # among runs.starting: handed back below
        await self.reporter.release([f.run_id for f in leftover] + list(self.runs.starting))
        with contextlib.suppress(Exception):
            await self.reporter.flush_logs()
        for task in loops:
            task.cancel()
        with contextlib.suppress(Exception):  # serving nothing now: our versions' runs move on
            await self.api.heartbeat([], stopping=True)
        self.background.cancel_all()
        for pool in self.versions.pools():
            with contextlib.suppress(Exception):
                await pool.close()
        await self.server.close()
        await self.api.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.emit({"type": "stopped"})
