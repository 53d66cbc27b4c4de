"""The supervisor's end of one executor: its socket, its frames, how it died.

* :class:`ExecutorServer` is the unix socket executors connect to; it matches them by pid.
* :class:`Executor` is one connected executor: send a run, get log frames and a completion.
* :class:`ExecutorDied` says how an executor ended, as a wire error for its attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from worker.common import errors as codes
from worker.common.protocol import DequeuedRun
from worker.runtime.framing import read_frame, write_frame
from worker.runtime.timeout import CANCEL_SIGNAL

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ExecutorDied(Exception):
    def __init__(self, pid: int, code: int | None, sig: int | None) -> None:
        super().__init__(f"executor {pid} exited (code={code}, signal={sig})")
        self.pid, self.code, self.signal = pid, code, sig

    def wire_error(self) -> dict[str, Any]:
        if self.signal == signal.SIGSEGV:
            code, what = codes.TASK_PROCESS_SIGSEGV, "crashed with SIGSEGV"
        elif self.signal == signal.SIGTERM:
            code, what = codes.TASK_PROCESS_SIGTERM, "was terminated (SIGTERM)"
        elif self.signal is not None:
            name = signal.Signals(self.signal).name if self.signal in signal.Signals._value2member_map_ else str(self.signal)  # noqa: E501
            code, what = codes.TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE, f"was killed by {name}"
        else:
            code = codes.TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE
            what = f"exited with code {self.code}"
        return codes.internal_error(code, f"The task process {what} (pid {self.pid})")


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Kill an executor and everything it spawned (it leads its own process group)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def process_rss(pid: int) -> int:
    """Resident bytes of one process (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return 0


def group_rss(pid: int) -> int:
    """Resident bytes of an executor and everything it spawned."""
    total = process_rss(pid)
    # Walk the tree through /proc/<pid>/task/<tid>/children: O(tree), where psutil's
    # children(recursive=True) scans every process on the host (3 ms vs 0.1 ms per call).
    stack, seen = [pid], {pid}
    while stack:
        current = stack.pop()
        try:
            tids = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{current}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except (OSError, ValueError):
                continue
            for kid in kids:
                if kid not in seen:
                    seen.add(kid)
                    stack.append(kid)
                    total += process_rss(kid)
    return total


class Executor:
    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_log: Callable[[dict[str, Any]], None], baseline_rss: int = 0) -> None:
        self.pid = pid
        self.reader = reader
        self.writer = writer
        self.on_log = on_log
        #: RSS when it said hello: what a fresh executor of this version weighs
        self.baseline_rss = baseline_rss
        self.idle_since = time.monotonic()
        self.runs_done = 0
        self.run: DequeuedRun | None = None
        self.retiring = False
        self.exit_info: tuple[int | None, int | None] | None = None
        self._exited = asyncio.Event()
        self._completion: asyncio.Future[dict[str, Any]] | None = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read())

    @property
    def busy(self) -> bool:
        return self.run is not None

    async def _read(self) -> None:
        while True:
            frame = await read_frame(self.reader)
            if frame is None:
                break
            kind = frame.get("type")
            if kind in ("log", "clock"):  # clock: a durable wait paused / resumed the clock
                self.on_log(frame)
            elif kind == "completion" and self._completion and not self._completion.done():
                self._completion.set_result(frame)
        # EOF: the process is gone (or going). Give the zygote a moment to report how.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._exited.wait(), 2.0)
        self._fail_pending()

    def mark_exited(self, code: int | None, sig: int | None) -> None:
        self.exit_info = (code, sig)
        self._exited.set()
        self._fail_pending()

    def _fail_pending(self) -> None:
        if self._completion and not self._completion.done():
            code, sig = self.exit_info or (None, None)
            if self.exit_info is None:
                code = -1
            self._completion.set_exception(ExecutorDied(self.pid, code, sig))

    @property
    def alive(self) -> bool:
        return self.exit_info is None and not self._reader_task.done()

    async def execute(self, run: DequeuedRun) -> dict[str, Any]:
        """Send the run; return the completion frame or raise ExecutorDied."""
        self.send(run)
        return await self.result()

    def send(self, run: DequeuedRun) -> None:
        """Write the run's frame now, without yielding to the loop (the supervisor starts a
        leased run before it does anything else: docs/benchmarks.md, "Where the time goes");
        :meth:`result` then waits for its completion. A dead executor fails the result."""
        self._completion = asyncio.get_running_loop().create_future()
        if not self.alive:
            self._completion.set_exception(
                ExecutorDied(self.pid, *(self.exit_info or (-1, None))))
            return
        write_frame(self.writer, {"type": "execute", "run": run.to_wire()})

    async def result(self) -> dict[str, Any]:
        """The completion frame of the run :meth:`send` wrote, or raise ExecutorDied."""
        completion = self._completion
        assert completion is not None, "send() first"
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        try:
            return await completion
        finally:
            self._completion = None

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            write_frame(self.writer, {"type": "shutdown"})

    def kill(self) -> None:
        kill_group(self.pid)

    def cancel(self) -> None:
        """Tell the executor its run was canceled (see :mod:`worker.runtime.timeout`)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, CANCEL_SIGNAL)

    def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()


class ExecutorServer:
    """The unix socket executors connect to (one per supervisor, shared by all versions)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._waiting: dict[int, asyncio.Future[tuple[Any, Any, dict[str, Any]]]] = {}
        self._early: dict[int, tuple[Any, Any, dict[str, Any]]] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        self._server = await asyncio.start_unix_server(self._on_connect, path=self.path)

    async def _on_connect(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        hello = await read_frame(reader)
        if not hello or hello.get("type") != "hello":
            writer.close()
            return
        pid = int(hello["pid"])
        fut = self._waiting.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result((reader, writer, hello))
        else:
            self._early[pid] = (reader, writer, hello)

    async def wait_for(self, pid: int, timeout: float = 30.0) -> tuple[Any, Any, dict[str, Any]]:
        """(reader, writer, hello frame) of executor ``pid`` once it connects."""
        if pid in self._early:
            return self._early.pop(pid)
        fut: asyncio.Future[tuple[Any, Any, dict[str, Any]]] = (
            asyncio.get_running_loop().create_future())
        self._waiting[pid] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(pid, None)

    def forget(self, pid: int) -> None:
        fut = self._waiting.pop(pid, None)
        if fut and not fut.done():
            fut.cancel()

    async def close(self) -> None:
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
