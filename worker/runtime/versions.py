"""The code versions a worker replica serves: the current pool, and old ones draining.

Boot starts a zygote (it imports the project), registers the version's manifest and warms a pool
(docs/architecture.md, "Process model"); a reload does the same for changed code and, once it
succeeded, makes the new pool current while the old one finishes its runs; the janitor closes
drained pools and restarts a zygote that died.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import orjson

from worker.common.protocol import RegisterResponse, Wire
from worker.runtime import early_zygote
from worker.runtime.api_client import WorkerApi
from worker.runtime.background import Background
from worker.runtime.pool import ExecutorServer, Pool
from worker.runtime.settings import WorkerSettings
from worker.runtime.zygote_process import DiscoveryFailed, ZygoteProcess

Emit = Callable[[Wire], None]
OnExit = Callable[[int, int | None, int | None], None]


class _AdoptedProcess:
    """The parts of ``asyncio.subprocess.Process`` a ZygoteProcess uses, over the zygote the
    command started before the event loop existed (worker/runtime/early_zygote.py: a fork, or
    a ``subprocess.Popen``)."""

    def __init__(self, popen: Any, stdin: asyncio.StreamWriter,
                 stdout: asyncio.StreamReader) -> None:
        self._popen = popen
        self.pid = popen.pid
        self.stdin = stdin
        self.stdout = stdout

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        while (code := self._popen.poll()) is None:  # only at stop: no child watcher needed
            await asyncio.sleep(0.01)
        return code

    def kill(self) -> None:
        self._popen.kill()


class _AdoptedZygote(ZygoteProcess):
    def __init__(self, early: early_zygote.EarlyZygote, socket_path: str,
                 on_exit: OnExit) -> None:
        super().__init__(early.project_dir, socket_path, on_exit)
        self._popen = early.popen

    async def start(self, timeout: float = 120.0) -> dict[str, Any]:
        popen = self._popen
        assert popen.stdin is not None and popen.stdout is not None
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024, loop=loop)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop),
                                     popen.stdout)
        transport, protocol = await loop.connect_write_pipe(
            lambda: asyncio.streams.FlowControlMixin(loop=loop), popen.stdin)
        writer = asyncio.StreamWriter(transport, protocol, None, loop)
        # before any fork: where executors connect (the zygote was started without it)
        writer.write(orjson.dumps({"cmd": "socket", "path": self.socket_path}) + b"\n")
        self.proc = cast(asyncio.subprocess.Process, _AdoptedProcess(popen, writer, reader))
        self.prefork()
        return await self.handshake(timeout)


def adopt_early_zygote(project_dir: Path, socket_path: str,
                       on_exit: OnExit) -> ZygoteProcess | None:
    """The zygote ``trigger worker`` started before its imports, if it is this project's."""
    early = early_zygote.take(project_dir)
    return _AdoptedZygote(early, socket_path, on_exit) if early is not None else None


class Versions:
    def __init__(self, project_dir: Path, server: ExecutorServer, api: WorkerApi,
                 settings: WorkerSettings, *, emit: Emit, on_frame: Callable[[Wire], None],
                 on_change: Callable[[], None], stopping: Callable[[], bool],
                 background: Background, on_free: Callable[[], None] | None = None) -> None:
        self.project_dir = project_dir
        self.server = server
        self.api = api
        self.settings = settings
        self.emit = emit
        self.on_frame = on_frame
        self.on_change = on_change
        #: an executor of the current pool finished its run (pool.py: ``on_free``)
        self.on_free = on_free
        self.stopping = stopping
        self.background = background
        self.current: Pool | None = None
        self.old: list[Pool] = []
        self.heartbeat_seconds = 5.0
        #: recycles and kills of the pools a reload retired (worker_metrics.py)
        self.retired_recycles: dict[str, int] = {}
        self.retired_kills = 0
        self._reloading = asyncio.Lock()

    def pools(self) -> list[Pool]:
        return ([self.current] if self.current is not None else []) + self.old

    @property
    def reloading(self) -> bool:
        return self._reloading.locked()

    def dirs(self) -> list[str]:
        """The task folders of the current code (what a reload watches)."""
        pool = self.current
        if pool is None:
            return ["trigger"]
        return list(pool.zygote.manifest.get("config", {}).get("dirs") or ["trigger"])

    def _concurrency(self, manifest: Wire) -> int:
        if self.settings.concurrency:
            return self.settings.concurrency
        return int(manifest.get("config", {}).get("concurrency") or 10)

    async def boot(self, *, skip_hash: str | None = None) -> Pool | None:
        """Start a zygote, register its manifest, warm a pool. Raises DiscoveryFailed.

        Returns None when the code's content hash equals ``skip_hash`` (nothing changed).
        """
        holder: list[Pool] = []

        def on_exit(pid: int, code: int | None, sig: int | None) -> None:
            if holder:
                holder[0].handle_exit(pid, code, sig)

        zygote = (adopt_early_zygote(self.project_dir, self.server.path, on_exit)
                  or ZygoteProcess(self.project_dir, self.server.path, on_exit))
        manifest = await zygote.start()
        content_hash = str(manifest["content_hash"])
        if skip_hash is not None and content_hash == skip_hash:
            await zygote.stop()
            return None
        size = self._concurrency(manifest)
        try:
            reply = RegisterResponse.from_wire(await self.api.register(
                content_hash, manifest["tasks"], {
                    "host": socket.gethostname(), "pid": os.getpid(),
                    "runtime": "python", "project_dir": str(self.project_dir),
                    # run slots of this replica (/metrics: free slots)
                    "concurrency": size}))
        except BaseException:
            await zygote.stop()
            raise
        self.heartbeat_seconds = reply.heartbeat_seconds
        config = manifest.get("config", {})
        settings = self.settings
        pool = Pool(zygote, self.server, size=size, version_id=reply.version_id,
                    version=reply.version, content_hash=content_hash, on_log=self.on_frame,
                    on_change=self.on_change, on_free=self.on_free,
                    max_runs_per_process=int(config.get("max_runs_per_process") or 100),
                    max_memory_mib=config.get("max_memory_per_process"),
                    idle_timeout=settings.executor_idle_timeout,
                    min_warm=settings.min_warm_executors,
                    on_warning=lambda m: self.emit({"type": "warning", "message": m}))
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
            if self.stopping() or self.current is None:
                return
            current = self.current
            started = time.monotonic()
            try:
                pool = await self.boot(
                    skip_hash=current.content_hash if not current.zygote.dead.is_set() else None)
            except DiscoveryFailed as exc:
                self.emit({"type": "reload_failed", "error": str(exc)})
                return
            except Exception as exc:
                self.emit({"type": "reload_failed", "error": f"{type(exc).__name__}: {exc}"})
                return
            if pool is None or self.stopping():
                if pool is not None:
                    await pool.close()
                return
            self.current = pool
            current.drain()
            self.old.insert(0, current)
            self.on_change()
            self.background.start(self._announce_reloaded(pool, started))

    async def _announce_reloaded(self, pool: Pool, started: float) -> None:
        """Emit ``reloaded`` (with ``ms`` since the change was seen) once the new version has a
        warm executor: from then on a run starts on the new code without waiting."""
        deadline = time.monotonic() + 60
        while not pool.idle() and time.monotonic() < deadline and not self.stopping():
            await asyncio.sleep(0.005)
        if pool.idle():
            self.emit({"type": "reloaded", "version": pool.version,
                       "version_id": pool.version_id,
                       "ms": round((time.monotonic() - started) * 1000, 1)})

    async def janitor(self) -> None:
        """Close drained old versions; rebuild the current one if its zygote died."""
        while not self.stopping():
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
            if cur is not None and cur.zygote.dead.is_set() and not self.stopping():
                self.emit({"type": "warning", "message": "the zygote exited; restarting it"})
                await self.reload()
                await asyncio.sleep(1.0)
