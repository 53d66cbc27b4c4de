"""The supervisor: leases runs from the API and runs them on warm executors.

One asyncio (uvloop) process per worker replica (design §4). It starts a zygote per code
version, registers the version's manifest, keeps ``concurrency`` executors warm, long-polls
``/dequeue`` for as many runs as it has idle executors, heartbeats every held lease in one call,
batches completions and logs, replaces executors that die (failing just their attempt), and on
stop hands back unfinished leases (``/release``) and kills every process it started.
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
from worker.runtime.api_client import WorkerApi
from worker.runtime.attempt import failed_completion
from worker.runtime.pool import (
    DiscoveryFailed,
    Executor,
    ExecutorDied,
    ExecutorServer,
    Pool,
    ZygoteProcess,
)

EventSink = Callable[[dict[str, Any]], None]

#: seconds after max_duration before the supervisor kills an executor that did not answer
#: (env TRIGGER_MAX_DURATION_GRACE overrides)
MAX_DURATION_GRACE = 5.0


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

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])


class Supervisor:
    def __init__(self, project_dir: Path, api_url: str, secret_key: str, *,
                 concurrency: int | None, watch: bool, on_event: EventSink | None,
                 stop: asyncio.Event) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.instance_id = str(uuid.uuid4())
        self.api = WorkerApi(api_url, secret_key, self.instance_id)
        self.concurrency_arg = concurrency
        self.watch = watch
        self._on_event = on_event
        self.stop = stop
        self.stopping = False
        self.tmpdir = tempfile.mkdtemp(prefix="trigger-w-")
        self.server = ExecutorServer(os.path.join(self.tmpdir, "executors.sock"))
        self.current: Pool | None = None
        self.old: list[Pool] = []
        self.inflight: dict[str, InFlight] = {}
        self.completions: list[dict[str, Any]] = []
        self.logs: list[dict[str, Any]] = []
        self.capacity = asyncio.Event()
        self.heartbeat_seconds = 5.0
        self.wait_ms = int(_env_float("TRIGGER_DEQUEUE_WAIT_MS", 2000))
        self.shutdown_grace = _env_float("TRIGGER_SHUTDOWN_GRACE", 10.0)
        self.max_duration_grace = _env_float("TRIGGER_MAX_DURATION_GRACE", MAX_DURATION_GRACE)
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
                "runtime": "python", "project_dir": str(self.project_dir)})
        except BaseException:
            await zygote.stop()
            raise
        self.heartbeat_seconds = float(reply.get("heartbeat_seconds") or 5)
        config = manifest.get("config", {})
        pool = Pool(zygote, self.server, size=self._concurrency(manifest),
                    version_id=str(reply["version_id"]), version=str(reply.get("version")),
                    on_log=self._on_log, on_change=self.capacity.set,
                    max_runs_per_process=int(config.get("max_runs_per_process") or 100),
                    max_memory_mib=config.get("max_memory_per_process"))
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

    async def _janitor(self) -> None:
        """Close drained old versions; rebuild the current one if its zygote died."""
        while not self.stopping:
            await asyncio.sleep(0.2)
            for pool in list(self.old):
                if pool.drained() or (pool.zygote.dead.is_set() and not pool.executors):
                    self.old.remove(pool)
                    await pool.close()
            cur = self.current
            if cur is not None and cur.zygote.dead.is_set() and not self.stopping:
                self.emit({"type": "warning", "message": "the zygote exited; restarting it"})
                await self.reload()
                await asyncio.sleep(1.0)

    # --- logs --------------------------------------------------------------------------

    def _on_log(self, frame: dict[str, Any]) -> None:
        rec = {k: frame.get(k) for k in ("run_id", "attempt_number", "level", "message",
                                         "attributes", "time")}
        self.logs.append(rec)
        flight = self.inflight.get(str(rec["run_id"]))
        self.emit({"type": "log", "run_id": rec["run_id"],
                   "task_id": flight.run.get("task_id") if flight else None,
                   "level": rec["level"], "message": rec["message"],
                   "attributes": rec["attributes"]})

    # --- running -----------------------------------------------------------------------

    def _idle(self) -> list[Executor]:
        return self.current.idle() if self.current else []

    async def _dequeue_loop(self) -> None:
        backoff = 0.5
        while not self.stopping:
            idle = self._idle()
            if not idle:
                self.capacity.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.capacity.wait(), 1.0)
                continue
            pool = self.current
            assert pool is not None
            versions = [pool.version_id] + [p.version_id for p in self.old
                                            if p.version_id != pool.version_id]
            try:
                runs = await self.api.dequeue(list(dict.fromkeys(versions)), len(idle),
                                              self.wait_ms)
                backoff = 0.5
            except Exception as exc:
                self.emit({"type": "error", "message": f"dequeue failed: {exc}"})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            for run in runs:
                if self.stopping:
                    await self._release([run["run_id"]])
                    continue
                await self._start(run)

    async def _start(self, run: dict[str, Any]) -> None:
        # Runs locked to an old version still draining go to it when it can fork; everything
        # else (and old versions already gone) runs on the current version.
        pool = self.current
        assert pool is not None
        idle = pool.idle()
        while not idle:  # the server gave more runs than we had idle executors (should not)
            self.capacity.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.capacity.wait(), 1.0)
            pool = self.current
            assert pool is not None
            idle = pool.idle()
        ex = idle[0]
        flight = InFlight(run, pool, ex)
        ex.run = run  # reserve now; pool.execute sets it again
        self.inflight[flight.run_id] = flight
        self.emit({"type": "run_started", "run_id": flight.run_id, "task_id": run.get("task_id"),
                   "attempt": run.get("attempt_number"), "version": pool.version})
        task = asyncio.get_running_loop().create_task(self._execute(flight))
        self._run_tasks.add(task)
        task.add_done_callback(self._run_tasks.discard)

    async def _execute(self, flight: InFlight) -> None:
        run, pool, ex = flight.run, flight.pool, flight.executor
        limit = run.get("max_duration")
        job = asyncio.get_running_loop().create_task(pool.execute(ex, run))
        timeout = float(limit) + self.max_duration_grace if limit and limit < 2**31 - 1 else None
        done, _ = await asyncio.wait({job}, timeout=timeout)
        if not done:
            flight.timed_out = True
            pool.kill(ex)
        completion: dict[str, Any]
        try:
            frame = await job
            completion = frame["completion"]
        except ExecutorDied as died:
            if flight.timed_out:
                completion = failed_completion(run, codes.internal_error(
                    codes.MAX_DURATION_EXCEEDED,
                    f"Run exceeded maximum duration of {limit}s and was killed"))
            else:
                completion = failed_completion(run, died.wire_error(), skipped=False)
        except Exception as exc:
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_RUN_CRASHED, f"{type(exc).__name__}: {exc}"), skipped=False)
        completion.setdefault("duration_ms", int((time.monotonic() - flight.started) * 1000))
        self.inflight.pop(flight.run_id, None)
        self.capacity.set()
        if flight.lost:
            return  # the engine no longer gives this run to us: never report it
        completion["_task_id"] = run.get("task_id")
        self.completions.append(completion)

    # --- leases ------------------------------------------------------------------------

    def _held(self) -> list[str]:
        ids = [f.run_id for f in self.inflight.values() if not f.lost]
        ids += [str(c["run_id"]) for c in self.completions]
        return list(dict.fromkeys(ids))

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            ids = self._held()
            if not ids:
                continue
            try:
                reply = await self.api.heartbeat(ids)
            except Exception as exc:
                self.emit({"type": "error", "message": f"heartbeat failed: {exc}"})
                continue
            for run_id in reply.get("lost") or []:
                self._lose(str(run_id))

    def _lose(self, run_id: str) -> None:
        flight = self.inflight.get(run_id)
        self.completions = [c for c in self.completions if c["run_id"] != run_id]
        if flight is None or flight.lost:
            return
        flight.lost = True
        flight.pool.kill(flight.executor)
        self.emit({"type": "run_lost", "run_id": run_id, "task_id": flight.run.get("task_id")})

    async def _flush_loop(self) -> None:
        last_logs = 0.0
        while True:
            await asyncio.sleep(0.05)
            await self._flush_completions()
            if self.logs and time.monotonic() - last_logs >= 0.2:
                last_logs = time.monotonic()
                await self._flush_logs()

    async def _flush_completions(self) -> None:
        if not self.completions:
            return
        batch, self.completions = self.completions, []
        meta = {c["run_id"]: c.pop("_task_id", None) for c in batch}
        try:
            results = await self.api.complete(batch)
        except Exception as exc:
            self.emit({"type": "error", "message": f"complete failed: {exc}"})
            for c in batch:
                c["_task_id"] = meta.get(c["run_id"])
            self.completions = batch + self.completions
            await asyncio.sleep(1.0)
            return
        by_id = {r.get("run_id"): r for r in results}
        for c in batch:
            result = by_id.get(c["run_id"], {})
            self.emit({"type": "run_finished", "run_id": c["run_id"], "task_id": meta[c["run_id"]],
                       "attempt": c.get("attempt_number"), "ok": c["ok"],
                       "status": result.get("status"), "outcome": result.get("outcome"),
                       "duration_ms": c.get("duration_ms"),
                       "error": None if c["ok"] else c.get("error")})

    async def _flush_logs(self) -> None:
        batch, self.logs = self.logs[:5000], self.logs[5000:]
        try:
            await self.api.logs(batch)
        except Exception as exc:
            self.emit({"type": "error", "message": f"sending logs failed: {exc}"})

    async def _release(self, run_ids: list[str]) -> None:
        if not run_ids:
            return
        try:
            await self.api.release(run_ids)
        except Exception as exc:
            self.emit({"type": "error", "message": f"release failed: {exc}"})

    # --- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        await self.server.start()
        background: list[asyncio.Task[Any]] = []
        dequeue: asyncio.Task[Any] | None = None
        try:
            self.current = await self.boot_version()
            loop = asyncio.get_running_loop()
            background = [loop.create_task(self._heartbeat_loop()),
                          loop.create_task(self._flush_loop()),
                          loop.create_task(self._janitor())]
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

    async def _shutdown(self, dequeue: asyncio.Task[Any] | None,
                        background: list[asyncio.Task[Any]]) -> None:
        self.stopping = True
        self.emit({"type": "stopping", "running": len(self.inflight)})
        deadline = time.monotonic() + self.shutdown_grace
        if dequeue is not None and not dequeue.done():
            # Let an open long-poll return (runs it brings are released at once).
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(asyncio.shield(dequeue),
                                       max(0.1, min(self.wait_ms / 1000 + 1, self.shutdown_grace)))
            dequeue.cancel()
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        leftover = [f for f in self.inflight.values() if not f.lost]
        for flight in leftover:
            flight.lost = True
            flight.pool.kill(flight.executor)
        with contextlib.suppress(Exception):
            await self._flush_completions()
        await self._release([f.run_id for f in leftover])
        with contextlib.suppress(Exception):
            await self._flush_logs()
        for task in background:
            task.cancel()
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
                     stop: asyncio.Event | None = None) -> None:
    """Run a worker replica until ``stop`` is set (then shut down gracefully).

    Raises :class:`worker.runtime.pool.DiscoveryFailed` when the project cannot be imported at
    boot (``str(exc)`` names the file and line).
    """
    supervisor = Supervisor(Path(project_dir), api_url, secret_key, concurrency=concurrency,
                            watch=watch, on_event=on_event, stop=stop or asyncio.Event())
    await supervisor.run()


def main(project_dir: Path | str = ".", api_url: str | None = None,
         secret_key: str | None = None, *, concurrency: int | None = None,
         watch: bool = False, on_event: EventSink | None = None) -> None:
    """Blocking entry point: uvloop, SIGTERM/SIGINT → graceful stop."""
    import uvloop

    api_url = api_url or os.environ.get("TRIGGER_API_URL", "http://127.0.0.1:3030")
    secret_key = secret_key or os.environ.get("TRIGGER_SECRET_KEY", "")

    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_worker(Path(project_dir), str(api_url), str(secret_key),
                         concurrency=concurrency, watch=watch, on_event=on_event, stop=stop)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_main())
