"""The supervisor's view of one code version: its zygote process and its warm executors.

* :class:`~worker.runtime.zygote_process.ZygoteProcess` (its own module) is the zygote it forks
  executors from.
* :class:`Pool` keeps up to ``concurrency`` warm executors of one version: it replaces dead ones,
  trims idle ones, recycles those past ``max_runs_per_process`` or ``max_memory_per_process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from worker.common.protocol import DequeuedRun
from worker.runtime.background import Background
from worker.runtime.executor_link import (
    Executor,
    ExecutorDied,
    ExecutorServer,
    kill_group,
)
from worker.runtime.zygote_process import ZygoteProcess

__all__ = ["Executor", "ExecutorDied", "ExecutorServer", "Pool", "PoolUnavailable",
           "kill_group"]

log = logging.getLogger(__name__)


class PoolUnavailable(Exception):
    """The pool cannot run anything (its zygote is gone); the run should be handed back."""


class Pool:
    """Warm executors of one code version.

    ``size`` is the replica's ``concurrency``: at most that many executors, one run each. All of
    them are forked at boot (warm); executors idle for ``idle_timeout`` seconds are retired down
    to ``min_warm``, and the pool forks again (from the zygote: imports stay warm) when runs come
    (:meth:`acquire`). An executor is recycled after ``max_runs_per_process`` runs, or when its
    RSS after a run passes ``max_memory_per_process`` — unless a fresh executor already weighs
    about that much, in which case recycling would loop (celery#4125): it warns once instead.
    """

    def __init__(self, zygote: ZygoteProcess, server: ExecutorServer, *, size: int,
                 version_id: str, version: str, content_hash: str = "",
                 on_log: Callable[[dict[str, Any]], None],
                 on_change: Callable[[], None], max_runs_per_process: int = 100,
                 max_memory_mib: int | None = None, idle_timeout: float | None = None,
                 min_warm: int = 1,
                 on_warning: Callable[[str], None] | None = None,
                 on_free: Callable[[], None] | None = None) -> None:
        self.zygote = zygote
        self.server = server
        self.size = size
        self.target = size
        self.min_warm = max(0, min(min_warm, size))
        self.idle_timeout = idle_timeout
        self.version_id = version_id
        self.version = version
        #: the code's hash: a reload to the same code keeps this pool
        self.content_hash = content_hash
        self.on_log = on_log
        self.on_change = on_change
        #: an executor finished its run and is free (default: ``on_change``)
        self.on_free = on_free or on_change
        self.on_warning = on_warning or (lambda message: None)
        self.max_runs = max_runs_per_process
        self.max_memory = max_memory_mib * 1024 * 1024 if max_memory_mib else None
        self.executors: dict[int, Executor] = {}
        self.draining = False
        self.closed = False
        self.recycled = {"max_runs": 0, "memory": 0, "idle": 0}
        #: busy executors killed (lost lease, overdue max_duration, out of memory)
        self.killed = 0
        self._memory_warned = False
        self._spawning = 0
        self._wanted = 0
        self._changed = asyncio.Event()
        self._pending_exits: dict[int, tuple[int | None, int | None]] = {}
        self._background = Background()

    def _notify(self) -> None:
        self._changed.set()
        self.on_change()

    # --- sizing ------------------------------------------------------------------------

    def _active_count(self) -> int:
        return sum(1 for e in self.executors.values() if not e.retiring) + self._spawning

    def idle(self) -> list[Executor]:
        return [e for e in self.executors.values() if e.alive and not e.busy and not e.retiring]

    def busy_count(self) -> int:
        return sum(1 for e in self.executors.values() if e.busy)

    def free_slots(self) -> int:
        """Runs this pool can take now (forking more executors if it has to)."""
        if self.draining or self.closed or self.zygote.dead.is_set():
            return 0
        return max(0, self.size - self.busy_count())

    def fill(self) -> None:
        """Fork executors (in the background) until the pool has ``target`` of them."""
        if self.draining or self.closed or self.zygote.dead.is_set():
            return
        for _ in range(self.target - self._active_count()):
            self._spawning += 1
            self._background.start(self._spawn())

    async def _spawn(self) -> None:
        pid = None
        try:
            pid = await self.zygote.fork()
            conn = await self.server.wait_for(pid)
            ex = Executor(pid, conn, self.on_log,
                          baseline_rss=int((conn.hello or {}).get("rss") or 0),
                          on_completion=self._settle)
            self.executors[pid] = ex
            if pid in self._pending_exits:  # died before it said hello
                self.handle_exit(pid, *self._pending_exits.pop(pid))
                return
            if self.draining or self.closed:
                self._retire(ex)
        except Exception as exc:
            if pid is not None:
                kill_group(pid)
                self.server.forget(pid)
            # surfaced (the worker's event stream prints warnings), never silent; a pool that is
            # closing, or whose zygote died (the janitor restarts it), expects failed forks
            if not (self.closed or self.draining or self.zygote.dead.is_set()):
                log.warning("forking an executor of version %s failed", self.version,
                            exc_info=True)
                self.on_warning(f"forking an executor failed: {type(exc).__name__}: {exc}")
            await asyncio.sleep(0.5)  # do not spin if forking keeps failing
        finally:
            self._spawning -= 1
            self._notify()
        if pid is not None and pid not in self.executors:
            self.fill()

    def trim(self) -> None:
        """Retire executors idle for longer than ``idle_timeout``, down to ``min_warm``."""
        if self.idle_timeout is None or self.draining or self.closed:
            return
        now = time.monotonic()
        for ex in sorted(self.idle(), key=lambda e: e.idle_since):
            if self._active_count() <= self.min_warm:
                break
            if now - ex.idle_since < self.idle_timeout:
                break
            self.target = max(self.min_warm, self._active_count() - 1)
            self.recycled["idle"] += 1
            self._retire(ex)

    def handle_exit(self, pid: int, code: int | None, sig: int | None) -> None:
        """The zygote reported that executor ``pid`` ended."""
        ex = self.executors.pop(pid, None)
        if ex is None:
            self._pending_exits[pid] = (code, sig)
            self.server.forget(pid)
            return
        ex.mark_exited(code, sig)
        ex.close()
        self.fill()
        self._notify()

    # --- running -----------------------------------------------------------------------

    async def acquire(self, run: DequeuedRun, timeout: float = 60.0) -> Executor:
        """Reserve an idle executor for ``run``, growing the pool when none is idle."""
        self._wanted += 1
        deadline = time.monotonic() + timeout
        try:
            while True:
                ex = self.try_acquire(run)
                if ex is not None:
                    return ex
                if self.busy_count() and not self.draining:  # a prefetched run waits for
                    deadline = time.monotonic() + timeout  # a busy one, however long it runs
                if self.closed or self.zygote.dead.is_set() or time.monotonic() > deadline:
                    raise PoolUnavailable(f"no executor of version {self.version} available")
                self.target = min(self.size, max(self.target, self.busy_count() + self._wanted))
                self.fill()
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):  # not wait_for: no task per wake-up
                        await self._changed.wait()
        finally:
            self._wanted -= 1

    def try_acquire(self, run: DequeuedRun) -> Executor | None:
        """An idle executor reserved for ``run`` now, or None (then :meth:`acquire` waits)."""
        ex = next((e for e in self.executors.values()
                   if e.alive and e.run is None and not e.retiring), None)
        if ex is not None:
            ex.run = run
        return ex

    async def execute(self, ex: Executor, run: DequeuedRun) -> dict[str, Any]:
        """Run on ``ex``; return the completion frame. Raises ExecutorDied."""
        return await self.start(ex, run)

    def want(self, waiting: int) -> None:
        """``waiting`` runs wait for an executor: grow the pool towards them (trimmed or dead
        executors are forked again)."""
        if waiting <= 0:
            return
        target = min(self.size, max(self.target, self.busy_count() + waiting))
        if target > self.target or self._active_count() < target:
            self.target = target
            self.fill()

    def start(self, ex: Executor, run: DequeuedRun) -> asyncio.Future[dict[str, Any]]:
        """Write ``run``'s frame to ``ex`` at once; the future (also :meth:`finish`) gets its
        completion frame, or ExecutorDied. By the time it is done, ``ex`` is free again (and
        may already run the next run)."""
        ex.run = run
        return ex.send(run)

    async def finish(self, ex: Executor) -> dict[str, Any]:
        """The completion frame of the run :meth:`start` sent to ``ex`` last. Raises
        ExecutorDied."""
        return await ex.result()

    def _settle(self, ex: Executor, frame: dict[str, Any]) -> None:
        """``ex`` sent its completion: it is free now (or retires). Called as the frame
        arrives, before the run's future is done: ``on_change`` may hand ``ex`` its next run
        right here."""
        ex.run = None
        ex.idle_since = time.monotonic()
        ex.runs_done += 1
        rss = int(frame.get("rss") or 0)
        if frame.get("recycle") or self.draining:
            self._retire(ex)
        elif ex.runs_done >= self.max_runs:
            self.recycled["max_runs"] += 1
            self._retire(ex)
        elif self._over_memory(ex, rss):
            self.recycled["memory"] += 1
            self._retire(ex)
        self._changed.set()
        self.on_free()

    def _over_memory(self, ex: Executor, rss: int) -> bool:
        if not self.max_memory or rss <= self.max_memory:
            return False
        # a fresh executor needs headroom under the limit, or each replacement is recycled too
        if self.max_memory - ex.baseline_rss < self.max_memory // 10:
            if not self._memory_warned:
                self._memory_warned = True
                self.on_warning(
                    f"max_memory_per_process is {self.max_memory >> 20} MiB but a fresh executor"
                    f" already uses {ex.baseline_rss >> 20} MiB: executors are not recycled for"
                    " memory (raise the limit; max_runs_per_process still applies)")
            return False
        return True

    def _retire(self, ex: Executor) -> None:
        """Let ``ex`` exit (it is idle) and fork a replacement."""
        ex.retiring = True
        ex.shutdown()
        pid = ex.pid

        async def force() -> None:
            await asyncio.sleep(5.0)
            if pid in self.executors:
                kill_group(pid)

        self._background.start(force())
        self.fill()

    def kill(self, ex: Executor) -> None:
        """Kill a busy executor's group (lost run / overdue max_duration / out of memory)."""
        ex.retiring = True
        ex.kill()
        self.killed += 1
        self.fill()

    # --- draining / closing ------------------------------------------------------------

    def drain(self) -> None:
        """Old version: idle executors exit now, busy ones after their run."""
        self.draining = True
        for ex in list(self.executors.values()):
            if not ex.busy:
                self._retire(ex)

    def drained(self) -> bool:
        return self.draining and not self.executors and self._spawning == 0

    async def close(self) -> None:
        self.closed = True
        self._changed.set()
        for ex in list(self.executors.values()):
            ex.kill()
        deadline = asyncio.get_running_loop().time() + 3.0
        while self.executors and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for ex in list(self.executors.values()):
            ex.close()
        self.executors.clear()
        await self.zygote.stop()
        self._background.cancel_all()
