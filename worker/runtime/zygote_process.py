"""The zygote process seen from the supervisor: :class:`ZygoteProcess` starts ``python -m
worker.runtime.zygote`` (a fresh interpreter, never a fork of the supervisor), reads its
manifest, asks it to fork, and receives executor exits (worker/runtime/zygote.py is the other
side)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson


class DiscoveryFailed(Exception):
    """The zygote could not import the project; ``str(exc)`` is the file:line + traceback."""


class ZygoteProcess:
    def __init__(self, project_dir: Path, socket_path: str,
                 on_exit: Callable[[int, int | None, int | None], None]) -> None:
        self.project_dir = project_dir
        self.socket_path = socket_path
        self.on_exit = on_exit
        self.proc: asyncio.subprocess.Process | None = None
        self.manifest: dict[str, Any] = {}
        self._forks: list[asyncio.Future[int]] = []
        #: forks asked for before the manifest (:meth:`prefork`), taken by the first forks
        self._preforked: list[asyncio.Future[int]] = []
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
            # -P: the project folder (our cwd) is not put first on sys.path, so a user's own
            # worker.py cannot shadow this package; discovery adds the project root itself
            sys.executable, "-P", "-m", "worker.runtime.zygote", "--project", str(self.project_dir),
            "--socket", self.socket_path, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env, cwd=str(self.project_dir),
            limit=64 * 1024 * 1024)
        return await self.handshake(timeout)

    def prefork(self) -> None:
        """Ask for the first executor now, before the manifest: the zygote forks it as soon as
        what an attempt needs is imported (zygote.py, ``fork_early``), while the version is
        being registered; the pool's first :meth:`fork` takes it."""
        if self.proc is None or self.proc.stdin is None:
            return
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        # never taken (the code did not change, or failed to load): nothing to report
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        self._forks.append(fut)
        self._preforked.append(fut)
        self.proc.stdin.write(b'{"cmd":"fork"}\n')

    async def handshake(self, timeout: float) -> dict[str, Any]:
        """Read the started zygote's manifest (or raise DiscoveryFailed), then its messages."""
        assert self.proc is not None and self.proc.stdout is not None
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
        if self._preforked:
            return await asyncio.wait_for(self._preforked.pop(0), 30.0)
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
