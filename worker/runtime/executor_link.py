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

import orjson

from worker.common import errors as codes
from worker.common.protocol import DequeuedRun
from worker.runtime.framing import HEADER, MAX_FRAME, encode
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


def exit_status(pid: int) -> tuple[int | None, int | None] | None:
    """(code, signal) of a process that exited but is not reaped yet (a zombie: its status
    is in ``/proc/<pid>/stat``), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] not in (b"Z", b"X"):
            return None
        status = int(fields[49])  # field 52, exit_code: as waitpid reports it
    except (OSError, ValueError, IndexError):
        return None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.WEXITSTATUS(status), None


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


class FrameProtocol(asyncio.Protocol):
    """One executor's connection: frames are parsed as the bytes arrive and handed on in the
    same callback (no coroutine per frame: a completion frees its executor, and the next run's
    frame is written, before the loop does anything else)."""

    def __init__(self, server: ExecutorServer) -> None:
        self._server = server
        self._buf = bytearray()
        self.transport: asyncio.Transport | None = None
        #: the executor this connection belongs to, once its hello was matched
        self.executor: Executor | None = None
        self.hello: dict[str, Any] | None = None
        #: frames that came before ``executor`` was set (none are expected)
        self.early: list[dict[str, Any]] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        if buf:
            buf += data
            view: bytes | bytearray = buf
        else:
            view = data
        offset, size = 0, len(view)
        while size - offset >= 4:
            (length,) = HEADER.unpack_from(view, offset)
            if length > MAX_FRAME:
                self._abort()
                return
            end = offset + 4 + length
            if end > size:
                break
            frame = orjson.loads(memoryview(view)[offset + 4:end])
            offset = end
            self._frame(frame)
        if view is buf:
            del buf[:offset]
        elif offset < size:
            buf += data[offset:]

    def _frame(self, frame: dict[str, Any]) -> None:
        executor = self.executor
        if executor is not None:
            executor.on_frame(frame)
        elif self.hello is None:
            if frame.get("type") != "hello":
                self._abort()
                return
            self.hello = frame
            self._server.connected(self)
        else:
            self.early.append(frame)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.executor is not None:
            self.executor.on_eof()
        elif self.hello is not None:
            self._server.lost(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class Executor:
    def __init__(self, pid: int, conn: FrameProtocol,
                 on_log: Callable[[dict[str, Any]], None], baseline_rss: int = 0,
                 on_completion: Callable[[Executor, dict[str, Any]], None] | None = None) -> None:
        self.pid = pid
        self.conn = conn
        self.on_log = on_log
        #: called with the completion frame as it arrives, before anyone awaiting the result
        #: hears of it (the pool frees the executor there and the next run may go at once)
        self.on_completion = on_completion
        #: RSS when it said hello: what a fresh executor of this version weighs
        self.baseline_rss = baseline_rss
        self.idle_since = time.monotonic()
        self.runs_done = 0
        self.run: DequeuedRun | None = None
        self.retiring = False
        self.exit_info: tuple[int | None, int | None] | None = None
        self._eof = False
        self._eof_timer: asyncio.TimerHandle | None = None
        #: the completion of the run in progress (None once it came, or failed)
        self._completion: asyncio.Future[dict[str, Any]] | None = None
        #: the completion of the last run sent (kept once done: :meth:`result` awaits it)
        self.future: asyncio.Future[dict[str, Any]] | None = None
        self._loop = asyncio.get_running_loop()
        conn.executor = self
        for frame in conn.early:
            self.on_frame(frame)
        conn.early.clear()
        if conn.closed:
            self.on_eof()

    @property
    def busy(self) -> bool:
        return self.run is not None

    def on_frame(self, frame: dict[str, Any]) -> None:
        kind = frame.get("type")
        if kind == "completion":
            completion = self._completion
            if completion is None or completion.done():
                return
            self._completion = None
            if self.on_completion is not None:
                self.on_completion(self, frame)
            completion.set_result(frame)
        elif kind in ("log", "clock"):  # clock: a durable wait paused / resumed the clock
            self.on_log(frame)

    def on_eof(self) -> None:
        """The connection closed: the process is gone (or going). Give the zygote a moment to
        report how before the pending run fails."""
        if self._eof:
            return
        self._eof = True
        if self.exit_info is None and self._completion is not None:
            self._eof_timer = self._loop.call_later(
                2.0, self._check_exit, time.monotonic() + 5.0)

    def _check_exit(self, deadline: float) -> None:
        """How did it end: the zygote's report (2 s after the EOF nothing came), else the
        zombie's status (a busy zygote reaps late); failing that by ``deadline``, unknown."""
        self._eof_timer = None
        if self.exit_info is not None:
            return
        status = exit_status(self.pid)
        if status is not None:
            self.mark_exited(*status)
        elif time.monotonic() > deadline:
            self._fail_pending()
        else:
            self._eof_timer = self._loop.call_later(0.05, self._check_exit, deadline)

    def mark_exited(self, code: int | None, sig: int | None) -> None:
        self.exit_info = (code, sig)
        self._fail_pending()

    def _fail_pending(self) -> None:
        if self._eof_timer is not None:
            self._eof_timer.cancel()
            self._eof_timer = None
        completion = self._completion
        if completion is not None and not completion.done():
            self._completion = None
            code, sig = self.exit_info or (-1, None)
            self.run = None
            self.idle_since = time.monotonic()
            completion.set_exception(ExecutorDied(self.pid, code, sig))

    @property
    def alive(self) -> bool:
        return self.exit_info is None and not self._eof

    async def execute(self, run: DequeuedRun) -> dict[str, Any]:
        """Send the run; return the completion frame or raise ExecutorDied."""
        return await self.send(run)

    def send(self, run: DequeuedRun) -> asyncio.Future[dict[str, Any]]:
        """Write the run's frame now, without yielding to the loop (the supervisor starts a
        leased run before it does anything else: docs/benchmarks.md, "Where the time goes").
        Returns the future of its completion frame; a dead executor fails it (ExecutorDied)."""
        completion: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        self._completion = self.future = completion
        if not self.alive:
            self._fail_pending()
            return completion
        self.conn.write(encode({"type": "execute", "run": run.to_wire()}))
        return completion

    async def result(self) -> dict[str, Any]:
        """The completion frame of the run :meth:`send` wrote last, or raise ExecutorDied."""
        assert self.future is not None, "send() first"
        return await self.future

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.write(encode({"type": "shutdown"}))

    def kill(self) -> None:
        kill_group(self.pid)

    def cancel(self) -> None:
        """Tell the executor its run was canceled (see :mod:`worker.runtime.timeout`)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(self.pid, CANCEL_SIGNAL)

    def close(self) -> None:
        if self._eof_timer is not None:
            self._eof_timer.cancel()
            self._eof_timer = None
        with contextlib.suppress(Exception):
            self.conn.close()


class ExecutorServer:
    """The unix socket executors connect to (one per supervisor, shared by all versions)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._waiting: dict[int, asyncio.Future[FrameProtocol]] = {}
        self._early: dict[int, FrameProtocol] = {}
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: FrameProtocol(self), path=self.path)

    def connected(self, conn: FrameProtocol) -> None:
        """``conn`` said hello."""
        assert conn.hello is not None
        pid = int(conn.hello["pid"])
        fut = self._waiting.pop(pid, None)
        if fut is not None and not fut.done():
            fut.set_result(conn)
        else:
            self._early[pid] = conn

    async def wait_for(self, pid: int, timeout: float = 30.0) -> FrameProtocol:
        """The connection of executor ``pid`` once it said hello (``conn.hello``)."""
        if pid in self._early:
            return self._early.pop(pid)
        fut: asyncio.Future[FrameProtocol] = asyncio.get_running_loop().create_future()
        self._waiting[pid] = fut
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._waiting.pop(pid, None)

    def lost(self, conn: FrameProtocol) -> None:
        """``conn`` closed before a pool took it (its zygote was stopped)."""
        pid = int((conn.hello or {}).get("pid") or 0)
        if self._early.get(pid) is conn:
            del self._early[pid]

    def forget(self, pid: int) -> None:
        fut = self._waiting.pop(pid, None)
        if fut and not fut.done():
            fut.cancel()
        conn = self._early.pop(pid, None)
        if conn is not None:
            conn.close()

    async def close(self) -> None:
        if self._server:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
