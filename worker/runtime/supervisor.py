"""The supervisor: leases runs from the API and runs them on warm executors.

One asyncio (uvloop) process per worker replica (docs/architecture.md, "Process model"). It starts a
zygote per code version, registers the version's manifest, keeps ``concurrency`` executors warm,
long-polls ``/dequeue`` for as many runs as it has idle executors, heartbeats every held lease in
one call, batches completions and logs, replaces executors that die (failing just their attempt),
and on stop hands back unfinished leases (``/release``) and kills every process it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.common import errors as codes
from worker.common.machines import MACHINE_PRESETS
from worker.runtime.api_client import WorkerApi, retry_delay
from worker.runtime.crash_spans import died_attempt_request
from worker.runtime.executor_link import group_rss
from worker.runtime.outcomes import failed_completion, oom_retry_machine
from worker.runtime.pool import (
    DiscoveryFailed,
    Executor,
    ExecutorDied,
    ExecutorServer,
    Pool,
    PoolUnavailable,
    ZygoteProcess,
)
from worker.runtime.reporting import Reporting

EventSink = Callable[[dict[str, Any]], None]

#: seconds after max_duration before the supervisor kills an executor that did not answer
#: (env TRIGGER_MAX_DURATION_GRACE overrides)
MAX_DURATION_GRACE = 5.0
#: seconds a canceled run gets (on_cancel hooks, finally blocks) before its group is killed
#: (env TRIGGER_CANCEL_GRACE overrides)
CANCEL_GRACE = 10.0


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass
class InFlight:
    run: dict[str, Any]
    pool: Pool
    executor: Executor
    started: float = field(default_factory=time.monotonic)
    lost: bool = False
    timed_out: bool = False
    out_of_memory: bool = False
    #: machine preset memory in bytes (None: not enforced)
    memory_limit: int | None = None
    #: seconds spent in durable waits (excluded from max_duration), and since when paused
    paused_total: float = 0.0
    paused_since: float | None = None

    def pause(self, paused: bool) -> None:
        now = time.monotonic()
        if paused and self.paused_since is None:
            self.paused_since = now
        elif not paused and self.paused_since is not None:
            self.paused_total += now - self.paused_since
            self.paused_since = None

    def execution_seconds(self) -> float:
        """Execution time of the attempt so far, waits excluded, including what it used
        before a checkpoint (the lease's ``execution_ms``)."""
        now = time.monotonic()
        waiting = self.paused_total + (now - self.paused_since if self.paused_since else 0.0)
        carried = float(self.run.get("execution_ms") or 0) / 1000
        return carried + now - self.started - waiting

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])


class Supervisor(Reporting):
    def __init__(self, project_dir: Path, api_url: str, secret_key: str, *,
                 concurrency: int | None, watch: bool, on_event: EventSink | None,
                 stop: asyncio.Event, force: asyncio.Event | None = None) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.instance_id = str(uuid.uuid4())
        self.api = WorkerApi(api_url, secret_key, self.instance_id)
        self.concurrency_arg = concurrency
        self.watch = watch
        self._on_event = on_event
        self.stop = stop
        #: set by a second SIGTERM/SIGINT: stop now, hand every lease back
        self.force = force or asyncio.Event()
        self.stopping = False
        self.tmpdir = tempfile.mkdtemp(prefix="trigger-w-")
        self.server = ExecutorServer(os.path.join(self.tmpdir, "executors.sock"))
        self.current: Pool | None = None
        self.old: list[Pool] = []
        self.inflight: dict[str, InFlight] = {}
        self.completions: list[dict[str, Any]] = []
        self.completing: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.capacity = asyncio.Event()
        self.completed = asyncio.Event()
        self.heartbeat_seconds = 5.0
        self.wait_ms = int(_env_float("TRIGGER_DEQUEUE_WAIT_MS", 2000))
        self.shutdown_grace = _env_float("TRIGGER_SHUTDOWN_GRACE", 10.0)
        self.max_duration_grace = _env_float("TRIGGER_MAX_DURATION_GRACE", MAX_DURATION_GRACE)
        self.cancel_grace = _env_float("TRIGGER_CANCEL_GRACE", CANCEL_GRACE)
        idle = _env_float("TRIGGER_EXECUTOR_IDLE_TIMEOUT", 300.0)
        self.idle_timeout = idle if idle > 0 else None
        self.min_warm = int(_env_float("TRIGGER_MIN_WARM_EXECUTORS", 1))
        self.enforce_memory = os.environ.get("TRIGGER_ENFORCE_MACHINE_MEMORY", "1") != "0"
        #: runs leased but not yet on an executor (still heartbeated)
        self.starting: set[str] = set()
        #: runs leased ahead of a free executor, so one that finishes starts its next run at
        #: once instead of after a /dequeue round trip (default: the pool's size; 0 = none)
        self.prefetch = int(_env_float("TRIGGER_PREFETCH", -1))
        self.dropped_logs = 0
        #: recycles and kills of the pools a reload retired (worker_metrics.py)
        self.retired_recycles: dict[str, int] = {}
        self.retired_kills = 0
        self._reload_started: float | None = None
        self._run_tasks: set[asyncio.Task[Any]] = set()
        self._reloading = asyncio.Lock()

    # --- events ------------------------------------------------------------------------

    def emit(self, event: dict[str, Any]) -> None:
        if self._on_event is None:
            return
        with contextlib.suppress(Exception):  # a broken printer must not break the worker
            self._on_event(event)

    # --- versions ----------------------------------------------------------------------

    def _concurrency(self, manifest: dict[str, Any]) -> int:
        if self.concurrency_arg:
            return int(self.concurrency_arg)
        env = os.environ.get("TRIGGER_CONCURRENCY")
        if env and env.isdigit() and int(env) > 0:
            return int(env)
        return int(manifest.get("config", {}).get("concurrency") or 10)

    async def start_zygote(self) -> tuple[ZygoteProcess, dict[str, Any], list[Pool]]:
        holder: list[Pool] = []

        def on_exit(pid: int, code: int | None, sig: int | None) -> None:
            if holder:
                holder[0].handle_exit(pid, code, sig)

        zygote = ZygoteProcess(self.project_dir, self.server.path, on_exit)
        manifest = await zygote.start()
        return zygote, manifest, holder

    async def boot_version(self, *, skip_hash: str | None = None) -> Pool | None:
        """Start a zygote, register its manifest, warm a pool. Raises DiscoveryFailed.

        Returns None when the code's content hash equals ``skip_hash`` (nothing changed).
        """
        zygote, manifest, holder = await self.start_zygote()
        if skip_hash is not None and manifest["content_hash"] == skip_hash:
            await zygote.stop()
            return None
        try:
            reply = await self.api.register(manifest["content_hash"], manifest["tasks"], {
                "host": socket.gethostname(), "pid": os.getpid(),
                "runtime": "python", "project_dir": str(self.project_dir),
                # run slots of this replica (/metrics: free slots)
                "concurrency": self._concurrency(manifest)})
        except BaseException:
            await zygote.stop()
            raise
        self.heartbeat_seconds = float(reply.get("heartbeat_seconds") or 5)
        config = manifest.get("config", {})
        pool = Pool(zygote, self.server, size=self._concurrency(manifest),
                    version_id=str(reply["version_id"]), version=str(reply.get("version")),
                    on_log=self._on_log, on_change=self.capacity.set,
                    max_runs_per_process=int(config.get("max_runs_per_process") or 100),
                    max_memory_mib=config.get("max_memory_per_process"),
                    idle_timeout=self.idle_timeout, min_warm=self.min_warm,
                    on_warning=lambda m: self.emit({"type": "warning", "message": m}))
        pool.content_hash = manifest["content_hash"]  # type: ignore[attr-defined]
        holder.append(pool)
        pool.fill()
        self.emit({"type": "version_registered", "version": pool.version,
                   "version_id": pool.version_id, "tasks": [t["id"] for t in manifest["tasks"]],
                   "concurrency": pool.size})
        for item in manifest.get("unexported") or []:
            self.emit({"type": "warning", "message": f"{item['file']}:{item['line']}: task "
                       f"{item['id']!r} is {item['reason']}", **item})
        return pool

    async def reload(self) -> None:
        """Hot reload: a new zygote; on success it becomes current, the old one drains."""
        async with self._reloading:
            if self.stopping or self.current is None:
                return
            current = self.current
            self._reload_started = time.monotonic()
            try:
                pool = await self.boot_version(
                    skip_hash=getattr(current, "content_hash", None)
                    if not current.zygote.dead.is_set() else None)
            except DiscoveryFailed as exc:
                self.emit({"type": "reload_failed", "error": str(exc)})
                return
            except Exception as exc:
                self.emit({"type": "reload_failed", "error": f"{type(exc).__name__}: {exc}"})
                return
            if pool is None or self.stopping:
                if pool is not None:
                    await pool.close()
                return
            self.current = pool
            current.drain()
            self.old.insert(0, current)
            self.capacity.set()
            started = self._reload_started
            loop = asyncio.get_running_loop()
            self._run_tasks.add(loop.create_task(self._announce_reloaded(pool, started)))

    async def _announce_reloaded(self, pool: Pool, started: float | None) -> None:
        """Emit ``reloaded`` (with ``ms`` since the change was seen) once the new version has a
        warm executor: from then on a run starts on the new code without waiting."""
        deadline = time.monotonic() + 60
        while not pool.idle() and time.monotonic() < deadline and not self.stopping:
            await asyncio.sleep(0.005)
        if pool.idle():
            ms = None if started is None else round((time.monotonic() - started) * 1000, 1)
            self.emit({"type": "reloaded", "version": pool.version,
                       "version_id": pool.version_id, "ms": ms})

    async def _janitor(self) -> None:
        """Close drained old versions; rebuild the current one if its zygote died."""
        while not self.stopping:
            await asyncio.sleep(0.2)
            if self.current is not None:
                self.current.trim()
            for pool in list(self.old):
                if pool.drained() or (pool.zygote.dead.is_set() and not pool.executors):
                    self.old.remove(pool)
                    for reason, n in pool.recycled.items():
                        self.retired_recycles[reason] = self.retired_recycles.get(reason, 0) + n
                    self.retired_kills += pool.killed
                    await pool.close()
            cur = self.current
            if cur is not None and cur.zygote.dead.is_set() and not self.stopping:
                self.emit({"type": "warning", "message": "the zygote exited; restarting it"})
                await self.reload()
                await asyncio.sleep(1.0)

    # --- running -----------------------------------------------------------------------

    def _free_slots(self) -> int:
        if not self.current:
            return 0
        prefetch = self.prefetch if self.prefetch >= 0 else self.current.size
        return self.current.free_slots() + prefetch - len(self.starting)

    async def _dequeue_loop(self) -> None:
        failures = 0
        while not self.stopping:
            free = self._free_slots()
            if free <= 0:
                self.capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.capacity.wait(), 1.0)
                continue
            pool = self.current
            assert pool is not None
            # Only the current version: an old one only finishes what it runs. A run locked to
            # a version nobody serves any more migrates to this one when it is leased again
            # (docs/run-states.md, "Versions").
            try:
                runs = await self.api.dequeue([pool.version_id], free, self.wait_ms)
                failures = 0
            except Exception as exc:
                self.emit({"type": "error", "message": f"dequeue failed: {exc}"})
                failures += 1
                await asyncio.sleep(retry_delay(failures))  # back within ~1 s of the API
                continue
            for run in runs:
                self.starting.add(str(run["run_id"]))
            for run in runs:
                if self.stopping:
                    self.starting.discard(str(run["run_id"]))
                    await self._release([run["run_id"]])
                    continue
                task = asyncio.get_running_loop().create_task(self._start(run))
                self._run_tasks.add(task)
                task.add_done_callback(self._run_tasks.discard)

    def _memory_limit(self, run: dict[str, Any]) -> int | None:
        if not self.enforce_memory:
            return None
        preset = MACHINE_PRESETS.get(str(run.get("machine") or ""))
        return int(preset["memory"] * 1024**3) if preset else None

    def _retry_here(self, run: dict[str, Any]) -> None:
        """The engine kept the lease for a short retry: run the next attempt here after its
        delay, on a warm executor, heartbeating it meanwhile (it holds its slot)."""
        run_id = str(run["run_id"])
        self.starting.add(run_id)

        async def later() -> None:
            await asyncio.sleep(max(0, int(run.get("delay_ms") or 0)) / 1000)
            if self.stopping:
                self.starting.discard(run_id)
                await self._release([run_id])
                return
            await self._start(run)

        task = asyncio.get_running_loop().create_task(later())
        self._run_tasks.add(task)
        task.add_done_callback(self._run_tasks.discard)

    async def _start(self, run: dict[str, Any]) -> None:
        # The engine hands us runs of the version we listed (in-place retries keep theirs;
        # they run on the current code too); in-flight runs stay where they are.
        run_id = str(run["run_id"])
        pool = await self._pool_for(run)
        try:
            ex = await pool.acquire(run)
        except PoolUnavailable as exc:
            self.starting.discard(run_id)
            self.emit({"type": "error", "message": f"{exc}; handing run {run_id} back"})
            await self._release([run_id])
            return
        flight = InFlight(run, pool, ex, memory_limit=self._memory_limit(run))
        self.inflight[run_id] = flight
        self.starting.discard(run_id)
        self.emit({"type": "run_started", "run_id": run_id, "task_id": run.get("task_id"),
                   "attempt": run.get("attempt_number"), "version": pool.version,
                   "pid": ex.pid})
        task = asyncio.get_running_loop().create_task(self._execute(flight))
        self._run_tasks.add(task)
        task.add_done_callback(self._run_tasks.discard)

    async def _pool_for(self, run: dict[str, Any]) -> Pool:
        """The current pool. A run leased for a version a reload has registered but not yet
        switched to (an orphaned run migrates to the newest registered version) waits for that
        switch, so the version it records is the code it runs."""
        pool = self.current
        assert pool is not None
        wanted = run.get("version_id")
        deadline = time.monotonic() + 10
        while (wanted and pool.version_id != wanted and self._reloading.locked()
               and time.monotonic() < deadline):
            await asyncio.sleep(0.01)
            pool = self.current or pool
        return pool

    async def _execute(self, flight: InFlight) -> None:
        run, pool, ex = flight.run, flight.pool, flight.executor
        limit = run.get("max_duration")
        job = asyncio.get_running_loop().create_task(pool.execute(ex, run))
        budget = float(limit) + self.max_duration_grace if limit and limit < 2**31 - 1 else None
        while budget is not None:
            # the backstop behind the executor's own limit; waits do not use up the budget
            remaining = budget - flight.execution_seconds()
            if flight.paused_since is not None:
                remaining = max(remaining, 1.0)
            done, _ = await asyncio.wait({job}, timeout=max(remaining, 0.0))
            if done:
                break
            if flight.paused_since is None and flight.execution_seconds() >= budget:
                flight.timed_out = True
                pool.kill(ex)
                break
        if budget is None:
            await asyncio.wait({job})
        completion: dict[str, Any]
        try:
            frame = await job
            completion = frame["completion"]
        except ExecutorDied as died:
            completion = self._died_completion(flight, died)
            self._record_died_attempt(flight, completion)
        except Exception as exc:
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_RUN_CRASHED, f"{type(exc).__name__}: {exc}"), skipped=False)
        completion.setdefault("duration_ms", int((time.monotonic() - flight.started) * 1000))
        self.inflight.pop(flight.run_id, None)
        self.capacity.set()
        if flight.lost:
            return  # the engine no longer gives this run to us: never report it
        if completion.get("suspended"):
            # checkpointed: the engine already released the lease; it resumes elsewhere
            self.emit({"type": "run_suspended", "run_id": flight.run_id,
                       "task_id": run.get("task_id")})
            return
        completion["_task_id"] = run.get("task_id")
        completion["_max_attempts"] = run.get("max_attempts")
        self.completions.append(completion)
        self.completed.set()

    def _record_died_attempt(self, flight: InFlight, completion: dict[str, Any]) -> None:
        """The executor could not close its attempt span: close it here (crash_spans.py)."""
        body = died_attempt_request(flight.run, flight.started, completion.get("error") or {},
                                    str(((flight.run.get("ctx") or {}).get("project") or {})
                                        .get("ref") or ""))

        async def send() -> None:
            try:
                reply = await self.api.http.post(
                    "/otel/v1/traces", content=body,
                    headers={"content-type": "application/x-protobuf"})
                if reply.status_code >= 400:
                    raise RuntimeError(f"HTTP {reply.status_code}: {reply.text[:200]}")
            except Exception as exc:
                self.emit({"type": "error", "message": f"recording the span failed: {exc}"})

        task = asyncio.get_running_loop().create_task(send())
        self._run_tasks.add(task)
        task.add_done_callback(self._run_tasks.discard)

    def _died_completion(self, flight: InFlight, died: ExecutorDied) -> dict[str, Any]:
        run = flight.run
        if flight.timed_out:
            return failed_completion(run, codes.internal_error(
                codes.MAX_DURATION_EXCEEDED,
                f"Run exceeded maximum duration of {run.get('max_duration')}s and was killed"))
        if flight.out_of_memory:
            machine = str(run.get("machine"))
            limit_mib = (flight.memory_limit or 0) >> 20
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_PROCESS_OOM_KILLED,
                f"The task process used more than the {limit_mib} MiB of machine {machine!r} "
                f"and was killed (pid {died.pid})"), skipped=False)
            retry_machine = oom_retry_machine(run)
            if retry_machine:
                completion["retry_machine"] = retry_machine
            return completion
        return failed_completion(run, died.wire_error(), skipped=False)

    async def _memory_loop(self) -> None:
        """Kill an executor whose process group outgrows its run's machine preset (OOM)."""
        while True:
            await asyncio.sleep(0.2)
            for flight in list(self.inflight.values()):
                if flight.memory_limit is None or flight.lost or flight.out_of_memory:
                    continue
                if group_rss(flight.executor.pid) > flight.memory_limit:
                    flight.out_of_memory = True
                    flight.pool.kill(flight.executor)

    # --- leases ------------------------------------------------------------------------

    def _held(self) -> list[str]:
        ids = [f.run_id for f in self.inflight.values() if not f.lost]
        ids += list(self.starting)
        ids += [str(c["run_id"]) for c in self.completions]
        ids += [str(c["run_id"]) for c in self.completing]  # a /complete call in flight
        return list(dict.fromkeys(ids))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            ids = self._held()  # sent even when empty: it also says this worker is alive
            try:
                reply = await self.api.heartbeat(ids)
            except Exception as exc:
                self.emit({"type": "error", "message": f"heartbeat failed: {exc}"})
                continue
            canceled = set(reply.get("canceled") or [])
            for run_id in reply.get("lost") or []:
                self._lose(str(run_id), canceled=run_id in canceled)

    def _lose(self, run_id: str, canceled: bool = True) -> None:
        """The engine no longer gives ``run_id`` to us.

        Canceled: the executor is told (``on_cancel`` runs, the task is cancelled) and after
        the cancel grace its process group is killed if the run is still going. Otherwise (the
        lease expired and the run was rescued elsewhere) the executor is killed at once: the
        attempt belongs to another worker now.
        """
        flight = self.inflight.get(run_id)
        self.completions = [c for c in self.completions if c["run_id"] != run_id]
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
                       "task_id": flight.run.get("task_id"), "reason": "lease lost"})
            return
        flight.executor.cancel()
        self.emit({"type": "run_lost", "run_id": run_id, "task_id": flight.run.get("task_id")})
        self._run_tasks.add(asyncio.get_running_loop().create_task(self._kill_after_grace(flight)))

    async def _kill_after_grace(self, flight: InFlight) -> None:
        deadline = time.monotonic() + self.cancel_grace
        while time.monotonic() < deadline and flight.executor.run is flight.run:
            await asyncio.sleep(0.05)
        if flight.executor.run is flight.run and flight.executor.alive:
            flight.pool.kill(flight.executor)

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.server.start()
        metrics_port = os.environ.get("TRIGGER_WORKER_METRICS_PORT")
        if metrics_port:
            from worker.runtime import worker_metrics

            worker_metrics.serve(self, int(metrics_port))
        background: list[asyncio.Task[Any]] = []
        dequeue: asyncio.Task[Any] | None = None
        try:
            self.current = await self.boot_version()
            loop = asyncio.get_running_loop()
            background = [loop.create_task(self._heartbeat_loop()),
                          loop.create_task(self._flush_loop()),
                          loop.create_task(self._janitor()),
                          loop.create_task(self._memory_loop())]
            if self.watch:
                from worker.runtime.reload import watch_project

                background.append(loop.create_task(watch_project(self)))
            background.append(loop.create_task(self._announce_ready()))
            dequeue = loop.create_task(self._dequeue_loop())
            stop_wait = loop.create_task(self.stop.wait())
            await asyncio.wait({dequeue, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if dequeue.done() and dequeue.exception():
                raise dequeue.exception()  # type: ignore[misc]
        finally:
            await self._shutdown(dequeue, background)

    async def _announce_ready(self) -> None:
        """Emit ``ready`` once the first pool is warm (every executor forked and connected)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not self.stopping:
            pool = self.current
            if pool is not None and len(pool.executors) >= pool.size:
                self.emit({"type": "ready", "version": pool.version, "concurrency": pool.size,
                           "instance_id": self.instance_id})
                return
            await asyncio.sleep(0.02)

    async def _wait_unless_forced(self, awaitable: Any, timeout: float) -> None:
        force = asyncio.ensure_future(self.force.wait())
        try:
            await asyncio.wait({asyncio.ensure_future(awaitable), force}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            force.cancel()

    async def _shutdown(self, dequeue: asyncio.Task[Any] | None,
                        background: list[asyncio.Task[Any]]) -> None:
        """Stop leasing; give running attempts ``shutdown_grace`` seconds to finish; hand the
        rest back at once (``/release``) so another replica starts them without waiting for the
        lease to expire. ``force`` (a second signal) cuts every wait short."""
        self.stopping = True
        self.emit({"type": "stopping", "running": len(self.inflight)})
        deadline = time.monotonic() + self.shutdown_grace
        if dequeue is not None and not dequeue.done():
            # Let an open long-poll return: runs it brings are released at once, whereas
            # cancelling it could leave runs leased to us that we never hear of.
            # (the long poll ends within wait_ms: the grace period does not shorten this)
            await self._wait_unless_forced(asyncio.shield(dequeue), self.wait_ms / 1000 + 1)
            dequeue.cancel()
            with contextlib.suppress(BaseException):
                await dequeue
        while self.inflight and time.monotonic() < deadline and not self.force.is_set():
            await self._wait_unless_forced(asyncio.sleep(0.05), 0.05)
        if self.force.is_set():
            self.emit({"type": "stopping_now", "running": len(self.inflight)})
        leftover = [f for f in self.inflight.values() if not f.lost]
        for flight in leftover:
            flight.lost = True
            flight.pool.kill(flight.executor)
        with contextlib.suppress(Exception):
            await self._flush_completions()
        await self._release([f.run_id for f in leftover] + list(self.starting))
        with contextlib.suppress(Exception):
            await self._flush_logs()
        for task in background:
            task.cancel()
        with contextlib.suppress(Exception):  # serving nothing now: our versions' runs move on
            await self.api.heartbeat([], stopping=True)
        for task in list(self._run_tasks):
            task.cancel()
        pools = ([self.current] if self.current else []) + self.old
        for pool in pools:
            with contextlib.suppress(Exception):
                await pool.close()
        await self.server.close()
        await self.api.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.emit({"type": "stopped"})


async def run_worker(project_dir: Path, api_url: str, secret_key: str, *,
                     concurrency: int | None = None, watch: bool = False,
                     on_event: EventSink | None = None,
                     stop: asyncio.Event | None = None,
                     force: asyncio.Event | None = None) -> None:
    """Run a worker replica until ``stop`` is set (then shut down gracefully; setting
    ``force`` as well cuts the grace period short).

    Raises :class:`worker.runtime.pool.DiscoveryFailed` when the project cannot be imported at
    boot (``str(exc)`` names the file and line).
    """
    supervisor = Supervisor(Path(project_dir), api_url, secret_key, concurrency=concurrency,
                            watch=watch, on_event=on_event, stop=stop or asyncio.Event(),
                            force=force)
    await supervisor.run()


def main(project_dir: Path | str = ".", api_url: str | None = None,
         secret_key: str | None = None, *, concurrency: int | None = None,
         watch: bool = False, on_event: EventSink | None = None) -> None:
    """Blocking entry point: uvloop; SIGTERM/SIGINT → graceful stop, a second one → now."""
    import uvloop

    api_url = api_url or os.environ.get("TRIGGER_API_URL", "http://127.0.0.1:3030")
    secret_key = secret_key or os.environ.get("TRIGGER_SECRET_KEY", "")

    async def _main() -> None:
        stop, force = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            (force if stop.is_set() else stop).set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        await run_worker(Path(project_dir), str(api_url), str(secret_key),
                         concurrency=concurrency, watch=watch, on_event=on_event, stop=stop,
                         force=force)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main())
