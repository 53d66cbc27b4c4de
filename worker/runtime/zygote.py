"""The zygote: one fresh interpreter per code version that imports the tasks once and forks
warm executors on request (``python -m worker.runtime.zygote --project DIR --socket PATH``).

It holds no thread, socket or event loop, so forking it is safe (the supervisor, which has an
event loop and threads, is never forked). Protocol with the supervisor, JSON lines:

* stdout, first line: ``{"type": "ready", "manifest": {...}}`` or
  ``{"type": "discovery_error", "error": "file:line: ...traceback"}`` (then it exits 1);
* stdin: ``{"cmd": "fork"}`` → stdout ``{"type": "forked", "pid": N}``; ``{"cmd": "exit"}`` or
  EOF → the zygote exits; ``{"cmd": "socket", "path": P}`` sets the executors' socket when
  ``--socket`` was not given (``trigger worker`` starts its zygote before it has a socket:
  worker/runtime/early_zygote.py);
* stdout: ``{"type": "exit", "pid": N, "code": int|None, "signal": int|None}`` for every
  executor that ended (reaped with ``waitpid(WNOHANG)``), so the supervisor can fail the attempt
  of an executor that died (SIGKILL, ``os._exit``, segfault).

The protocol streams are moved off fds 0/1 at start so that a ``print`` in task code (at import
time, or in an executor) can never corrupt them: fd 1 becomes a copy of stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import gc
import os
import select
import signal
import sys
import traceback
from typing import TYPE_CHECKING, Any

import orjson

if TYPE_CHECKING:
    from worker.runtime.discovery import Discovered

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl(option: int, arg: int | bytes) -> None:
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, arg, 0, 0, 0)


def set_parent_death_signal(sig: int = signal.SIGKILL) -> None:
    """Linux: get ``sig`` when the parent dies, so nothing outlives a SIGKILLed supervisor."""
    _prctl(PR_SET_PDEATHSIG, int(sig))


def set_process_name(name: str) -> None:
    """Linux: the process name ``ps -e``, ``top`` and ``psutil.Process.name()`` show (15 bytes
    at most). The early zygote is a fork of the ``trigger worker`` command and keeps its
    command line (worker/runtime/early_zygote.py): the name tells them apart."""
    _prctl(PR_SET_NAME, name.encode()[:15])


class Zygote:
    def __init__(self, project: str, socket_path: str | None, early_fork: bool = False) -> None:
        self.project = project
        #: fork a first executor asked for before the end of the warm-up (``--early-fork``)
        self.early_fork = early_fork
        self.socket_path = socket_path
        # Private copies of the protocol streams; fds 0/1 get /dev/null and stderr.
        self.cmd_fd = os.dup(0)
        self.out_fd = os.dup(1)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.close(devnull)
        os.dup2(2, 1)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        self.children: set[int] = set()
        self.discovered: Discovered | None = None
        self.pid = os.getpid()
        self._buf = b""

    def emit(self, message: dict[str, Any]) -> None:
        data = orjson.dumps(message) + b"\n"
        while data:
            try:
                n = os.write(self.out_fd, data)
            except InterruptedError:
                continue
            except BrokenPipeError:
                os._exit(0)  # the supervisor is gone: nothing to report to, nobody to fork for
            data = data[n:]

    # --- lifecycle -----------------------------------------------------------------------

    def boot(self) -> bool:
        from worker.runtime.discovery import DiscoveryError, discover

        try:
            self.discovered = discover(self.project)
        except DiscoveryError as exc:
            self.emit({"type": "discovery_error", "error": str(exc)})
            return False
        except BaseException as exc:
            tb = "".join(traceback.format_exception(exc))
            self.emit({"type": "discovery_error", "error": f"discovery crashed: {tb}"})
            return False
        # The manifest goes out now: the supervisor registers it while we warm up below (its
        # fork requests wait in the pipe until then).
        self.emit({"type": "ready", "manifest": self.discovered.summary(), "pid": self.pid})
        self.warm()
        return True

    def warm(self) -> None:
        """Import and build what every executor needs, then freeze: forked children share these
        pages. The SDK's HTTP client (httpx, anyio) and durable waits are imported here, not at a
        run's first trigger or wait, so each executor does not pay ~20 MiB of private copies.
        Importing them creates no socket, thread or event loop (fork safety holds).

        In two parts: what an executor needs to run an attempt first; then, with
        ``--early-fork`` (``trigger worker``'s zygote, started before the command's imports)
        and a fork asked for already (the worker may have a run waiting), that first executor
        is forked at once, and only then the rest: the SDK's HTTP stack and TLS context, which
        that one executor imports itself if its tasks use them (docs/cold-start.md)."""
        # uvloop: each executor's event loop. Loaded after the fork, its extension module's
        # relocated and initialised pages were ~2.4 MiB of private memory per executor.
        import uvloop  # noqa: F401

        import worker.runtime.executor
        import worker.sdk.client
        from worker.common.settings import env_str
        from worker.runtime import telemetry

        # The span exporters and the resource, built once here (telemetry.prepare): done after
        # the fork instead, their imports (protobuf) and construction cost every executor
        # MiBs of private pages (docs/cold-start.md). No socket, no thread: a
        # failure here leaves it to each executor (telemetry.setup).
        assert self.discovered is not None
        with contextlib.suppress(Exception):
            telemetry.prepare(self.discovered.config, worker.sdk.client.api_url(),
                              env_str("TRIGGER_SECRET_KEY"))

        self.fork_early()

        import worker.sdk.subtasks
        import worker.sdk.wait

        with contextlib.suppress(ImportError):  # the SDK spans' encoder (span_export.py)
            import opentelemetry.exporter.otlp.proto.common.trace_encoder  # noqa: F401

        worker.sdk.client.ssl_context()
        with contextlib.suppress(ImportError):  # what a first request imports lazily
            import anyio._backends._asyncio  # noqa: F401
            import h11  # noqa: F401
            import httpcore  # noqa: F401
            import httpx  # noqa: F401

        # Frozen without a collection first (main() disabled the collector): a collection
        # would take ~30 ms here to find a handful of objects, and leave freed holes in pages
        # that the children's allocations would then write to (the gc.freeze() docs' advice).
        gc.freeze()
        gc.enable()

    def fork_early(self) -> None:
        """Fork one executor now if the supervisor asked for one already (commands up to the
        first fork are handled; the rest wait in the buffer for :meth:`serve`)."""
        if not self.early_fork:
            return
        ready, _, _ = select.select([self.cmd_fd], [], [], 0)
        if not ready:
            return
        chunk = os.read(self.cmd_fd, 65536)
        if not chunk:
            os._exit(0)  # supervisor gone
        self._buf += chunk
        self.handle_commands(forks=1, early=True)

    def handle_commands(self, forks: int | None = None, early: bool = False) -> bool:
        """Run the complete command lines in the buffer (at most ``forks`` forks: later lines
        stay). False: the zygote must exit."""
        while b"\n" in self._buf:
            if forks is not None and forks <= 0:
                return True
            line, self._buf = self._buf.split(b"\n", 1)
            if not line.strip():
                continue
            cmd = orjson.loads(line)
            kind = cmd.get("cmd")
            if kind == "exit":
                if forks is not None:  # handled by serve()
                    self._buf = line + b"\n" + self._buf
                    return True
                return False
            if kind == "socket":
                self.socket_path = str(cmd["path"])
            if kind == "fork":
                if forks is not None:
                    forks -= 1
                self.fork(early=early)
        return True

    def serve(self) -> None:
        # SIGCHLD only wakes the select below (no work in the handler itself).
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
        if not self.handle_commands():  # left by fork_early
            return
        while True:
            self.reap()
            try:
                ready, _, _ = select.select([self.cmd_fd, self.wake_r], [], [], 1.0)
            except InterruptedError:
                continue
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    while os.read(self.wake_r, 512):
                        pass
            if self.cmd_fd in ready:
                chunk = os.read(self.cmd_fd, 65536)
                if not chunk:
                    return  # supervisor gone
                self._buf += chunk
                if not self.handle_commands():
                    return

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            self.children.discard(pid)
            if os.WIFSIGNALED(status):
                self.emit({"type": "exit", "pid": pid, "code": None,
                           "signal": os.WTERMSIG(status)})
            else:
                self.emit({"type": "exit", "pid": pid, "code": os.waitstatus_to_exitcode(status),
                           "signal": None})

    def fork(self, early: bool = False) -> None:
        try:
            pid = os.fork()
        except OSError as exc:
            self.emit({"type": "fork_failed", "error": f"{errno.errorcode.get(exc.errno or 0)}"})
            return
        if pid:
            self.children.add(pid)
            self.emit({"type": "forked", "pid": pid, **({"early": True} if early else {})})
            return
        # --- child: becomes an executor and never returns into the zygote loop ---------
        code = 1
        try:
            os.setpgid(0, 0)
            if not gc.isenabled():
                # An early fork comes before warm() freezes and enables the collector: freeze
                # here what was inherited, as warm() does for the later ones. Enabled as it
                # was, the first collection walked every object the imports made (~80,000:
                # ~40 ms between this fork and the executor's hello, and every page it
                # touched copied; docs/cold-start.md).
                gc.freeze()
                gc.enable()
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            for fd in (self.cmd_fd, self.out_fd, self.wake_r, self.wake_w):
                os.close(fd)
            set_parent_death_signal()
            set_process_name("trigger-exec")
            if os.getppid() != self.pid:
                os._exit(1)  # the zygote died between fork and prctl
            from worker.runtime.executor import serve

            # forks are asked for after discovery and the socket only
            assert self.discovered is not None and self.socket_path is not None
            code = serve(self.socket_path, self.discovered)
        except BaseException:
            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code)


def main(argv: list[str] | None = None) -> int:
    # No collections while the project and the runtime import (~80 ms of the cold start's
    # critical path on the bench project); warm() freezes what is there, then enables it.
    gc.disable()
    parser = argparse.ArgumentParser(prog="python -m worker.runtime.zygote")
    parser.add_argument("--project", required=True)
    parser.add_argument("--socket", default=None, help="else the socket command sets it")
    parser.add_argument("--parent", type=int, default=None,
                        help="exit at once unless this pid is still our parent")
    parser.add_argument("--early-fork", action="store_true",
                        help="fork the first executor asked for before the end of the warm-up"
                        " (trigger worker's cold start)")
    args = parser.parse_args(argv)
    set_parent_death_signal()
    set_process_name("trigger-zygote")
    # Ctrl-C reaches the whole process group: the supervisor decides when we stop (a zygote
    # still importing dies with it), so no KeyboardInterrupt traceback from here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if args.parent is not None and os.getppid() != args.parent:
        return 0  # the command that started us ended before the line above: nobody needs us
    from worker.runtime.lean_imports import skip_httpx_cli

    skip_httpx_cli()  # before the task modules and the SDK import httpx
    zygote = Zygote(args.project, args.socket, early_fork=args.early_fork)
    if not zygote.boot():
        return 1
    zygote.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
