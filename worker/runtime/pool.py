"""The supervisor's view of one code version: its zygote process and its warm executors.

* :class:`ZygoteProcess` starts ``python -m worker.runtime.zygote`` (a fresh interpreter, never a
  fork of the supervisor), reads its manifest, asks it to fork, and receives executor exits.
* :class:`ExecutorServer` is the unix socket executors connect to; it matches them by pid.
* :class:`Executor` is one connected executor: send a run, get log frames and a completion.
* :class:`Pool` keeps ``size`` warm executors for one version, replaces dead ones and recycles
  those that ran ``max_runs_per_process`` runs or grew past ``max_memory_per_process``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from worker.common import errors as codes
from worker.runtime.framing import read_frame, write_frame


class DiscoveryFailed(Exception):
    """The zygote could not import the project; ``str(exc)`` is the file:line + traceback."""


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


class Executor:
    def __init__(self, pid: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_log: Callable[[dict[str, Any]], None]) -> None:
        self.pid = pid
        self.reader = reader
        self.writer = writer
        self.on_log = on_log
        self.runs_done = 0
        self.run: dict[str, Any] | None = None
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
            if kind == "log":
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

    async def execute(self, run: dict[str, Any]) -> dict[str, Any]:
        """Send the run; return the completion frame or raise ExecutorDied."""
        if not self.alive:
            raise ExecutorDied(self.pid, *(self.exit_info or (-1, None)))
        self._completion = asyncio.get_running_loop().create_future()
        write_frame(self.writer, {"type": "execute", "run": run})
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()
        try:
            return await self._completion
        finally:
            self._completion = None

    def shutdown(self) -> None:
        with contextlib.suppress(Exception):
            write_frame(self.writer, {"type": "shutdown"})

    def kill(self) -> None:
        kill_group(self.pid)

    def close(self) -> None:
        self._reader_task.cancel()
        with contextlib.suppress(Exception):
            self.writer.close()


class ExecutorServer:
    """The unix socket executors connect to (one per supervisor, shared by all versions)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._waiting: dict[int, asyncio.Future[tuple[Any, Any]]] = {}
        self._early: dict[int, tuple[Any, Any]] = {}
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
            fut.set_result((reader, writer))
        else:
            self._early[pid] = (reader, writer)

    async def wait_for(self, pid: int, timeout: float = 30.0) -> tuple[Any, Any]:
        if pid in self._early:
            return self._early.pop(pid)
        fut: asyncio.Future[tuple[Any, Any]] = asyncio.get_running_loop().create_future()
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


class ZygoteProcess:
    def __init__(self, project_dir: Path, socket_path: str,
                 on_exit: Callable[[int, int | None, int | None], None]) -> None:
        self.project_dir = project_dir
        self.socket_path = socket_path
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.manifest: dict[str, Any] = {}
        self._forks: list[asyncio.Future[int]] = []
        self._reader: asyncio.Task[None] | None = None
        self.dead = asyncio.Event()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    async def start(self, timeout: float = 120.0) -> dict[str, Any]:
        """Start the zygote and return its manifest, or raise DiscoveryFailed."""
        env = dict(os.environ)
        # The runtime must be importable by the child even when run from elsewhere.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "worker.runtime.zygote", "--project", str(self.project_dir),
            "--socket", self.socket_path, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env, cwd=str(self.project_dir),
            limit=64 * 1024 * 1024)
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        except TimeoutError:
            await self.stop()
            raise DiscoveryFailed(f"discovery did not finish within {timeout}s") from None
        if not line:
            await self.stop()
            raise DiscoveryFailed("the zygote exited before reporting its manifest")
        first = orjson.loads(line)
        if first.get("type") != "ready":
            await self.stop()
            raise DiscoveryFailed(first.get("error") or f"unexpected zygote message {first}")
        self.manifest = first["manifest"]
        self._reader = asyncio.get_running_loop().create_task(self._read())
        return self.manifest

    async def _read(self) -> None:
        assert self.proc and self.proc.stdout
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            msg = orjson.loads(line)
            kind = msg.get("type")
            if kind == "forked" and self._forks:
                fut = self._forks.pop(0)
                if not fut.done():
                    fut.set_result(int(msg["pid"]))
            elif kind == "fork_failed" and self._forks:
                fut = self._forks.pop(0)
                if not fut.done():
                    fut.set_exception(RuntimeError(f"fork failed: {msg.get('error')}"))
            elif kind == "exit":
                self.on_exit(int(msg["pid"]), msg.get("code"), msg.get("signal"))
        self.dead.set()
        for fut in self._forks:
            if not fut.done():
                fut.set_exception(RuntimeError("the zygote exited"))
        self._forks.clear()

    async def fork(self) -> int:
        if self.proc is None or self.proc.stdin is None or self.dead.is_set():
            raise RuntimeError("the zygote is not running")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._forks.append(fut)
        self.proc.stdin.write(b'{"cmd":"fork"}\n')
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, 30.0)

    async def stop(self, timeout: float = 3.0) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.write(b'{"cmd":"exit"}\n')
                await proc.stdin.drain()
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), timeout)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if self._reader:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 1.0)


class Pool:
    """Warm executors of one code version."""

    def __init__(self, zygote: ZygoteProcess, server: ExecutorServer, *, size: int,
                 version_id: str, version: str, on_log: Callable[[dict[str, Any]], None],
                 on_change: Callable[[], None], max_runs_per_process: int = 100,
                 max_memory_mib: int | None = None) -> None:
        self.zygote = zygote
        self.server = server
        self.size = size
        self.version_id = version_id
        self.version = version
        self.on_log = on_log
        self.on_change = on_change
        self.max_runs = max_runs_per_process
        self.max_memory = max_memory_mib * 1024 * 1024 if max_memory_mib else None
        self.executors: dict[int, Executor] = {}
        self.draining = False
        self.closed = False
        self._spawning = 0
        self._pending_exits: dict[int, tuple[int | None, int | None]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- sizing ------------------------------------------------------------------------

    def _active_count(self) -> int:
        return sum(1 for e in self.executors.values() if not e.retiring) + self._spawning

    def idle(self) -> list[Executor]:
        return [e for e in self.executors.values() if e.alive and not e.busy and not e.retiring]

    def busy_count(self) -> int:
        return sum(1 for e in self.executors.values() if e.busy)

    def fill(self) -> None:
        """Fork executors (in the background) until the pool has its size."""
        if self.draining or self.closed or self.zygote.dead.is_set():
            return
        for _ in range(self.size - self._active_count()):
            self._spawning += 1
            self._background(self._spawn())

    def _background(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _spawn(self) -> None:
        pid = None
        try:
            pid = await self.zygote.fork()
            reader, writer = await self.server.wait_for(pid)
            ex = Executor(pid, reader, writer, self.on_log)
            self.executors[pid] = ex
            if pid in self._pending_exits:  # died before it said hello
                self.handle_exit(pid, *self._pending_exits.pop(pid))
                return
            if self.draining or self.closed:
                self._retire(ex)
        except Exception:
            if pid is not None:
                kill_group(pid)
                self.server.forget(pid)
            await asyncio.sleep(0.5)  # do not spin if forking keeps failing
        finally:
            self._spawning -= 1
            self.on_change()
        if pid is not None and pid not in self.executors:
            self.fill()

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
        self.on_change()

    # --- running -----------------------------------------------------------------------

    async def execute(self, ex: Executor, run: dict[str, Any]) -> dict[str, Any]:
        """Run on ``ex``; return the completion frame. Raises ExecutorDied."""
        ex.run = run
        try:
            frame = await ex.execute(run)
        finally:
            ex.run = None
        ex.runs_done += 1
        rss = int(frame.get("rss") or 0)
        if (frame.get("recycle") or ex.runs_done >= self.max_runs
                or (self.max_memory and rss > self.max_memory) or self.draining):
            self._retire(ex)
        self.on_change()
        return frame

    def _retire(self, ex: Executor) -> None:
        """Let ``ex`` exit (it is idle) and fork a replacement."""
        ex.retiring = True
        ex.shutdown()
        pid = ex.pid

        async def force() -> None:
            await asyncio.sleep(5.0)
            if pid in self.executors:
                kill_group(pid)

        self._background(force())
        self.fill()

    def kill(self, ex: Executor) -> None:
        """Kill a busy executor's group (lost run / overdue max_duration)."""
        ex.retiring = True
        ex.kill()
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
        for ex in list(self.executors.values()):
            ex.kill()
        deadline = asyncio.get_running_loop().time() + 3.0
        while self.executors and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.02)
        for ex in list(self.executors.values()):
            ex.close()
        self.executors.clear()
        await self.zygote.stop()
        for task in list(self._tasks):
            task.cancel()
