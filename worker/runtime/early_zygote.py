"""Start the zygote first thing in ``trigger worker``, before the command's own imports.

Cold start (the command launched with a run queued → that run finished) used to be three long
steps in a row: the supervisor's interpreter imported the CLI and the runtime and checked the
API, only then did it start the zygote, which then imported the project and what executors
need (docs/cold-start.md). Started here instead, before anything heavy is imported, the zygote
imports on the second core while the supervisor does its part; the supervisor adopts it at
boot (:func:`worker.runtime.versions.adopt_early_zygote`) rather than starting its own.

The zygote is this process forked (:func:`spawn`), not a fresh interpreter: at this point the
command has loaded nothing but the interpreter, ``site`` and the ``worker`` package, and holds
no thread, socket or event loop, which is all a fresh ``python -m worker.runtime.zygote``
would have loaded (~65 ms of the cold start's critical path saved: docs/cold-start.md). The
child sets itself up as that interpreter would be (``-P``'s ``sys.path``, the project folder
as its working directory, the same ``PYTHONPATH``, its protocol pipes on fds 0/1) and runs
:func:`worker.runtime.zygote.main`; it learns the executors' socket path once adopted (the
``socket`` command, before the first fork). Its command line stays the command's own; its
process name (``ps -e``, ``psutil.Process.name()``) says ``trigger-zygote``. Where the
process runs a thread already (``worker.cli.main`` called inside a program), forking is not
safe and a fresh interpreter is started instead, as before.

A zygote that nobody adopts (the command failed before its boot) dies with this process: it
gets SIGKILL when its parent exits, exits if its parent was already gone when it set that up
(``--parent``), and exits quietly on a closed pipe.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from worker.common.conventions import CONFIG_FILE


class ForkedProcess:
    """The parts of ``subprocess.Popen`` the supervisor uses, for the forked zygote."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid = pid
        self.stdin = stdin
        self.stdout = stdout
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped elsewhere: gone all the same
                self.returncode = -signal.SIGKILL
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def kill(self) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)


@dataclass
class EarlyZygote:
    project_dir: Path
    #: a ``ForkedProcess``, or a ``subprocess.Popen`` (started where forking is not safe)
    popen: Any


_early: EarlyZygote | None = None
_spawned = False  # once per process (``python -m worker`` calls spawn before the CLI does)


def project_dir_of(argv: list[str]) -> Path | None:
    """``--project-dir`` of ``trigger worker``'s arguments (default "."), resolved; None when
    the command will not boot a worker (help)."""
    found = "."
    for i, arg in enumerate(argv):
        if arg in ("-h", "--help"):
            return None
        if arg == "--project-dir" and i + 1 < len(argv):
            found = argv[i + 1]
        elif arg.startswith("--project-dir="):
            found = arg.split("=", 1)[1]
    return Path(found).resolve()


def _zygote_env() -> dict[str, str]:
    """The environment ``ZygoteProcess.start`` gives a zygote: this package importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def _threaded() -> bool:
    threading = sys.modules.get("threading")
    return threading is not None and threading.active_count() > 1


def spawn(argv: list[str]) -> None:
    """Start the zygote of the project ``argv`` (``trigger worker``'s arguments) names.

    Does nothing when the folder has no config (the command reports that itself) or on a
    second call."""
    global _early, _spawned
    project_dir = project_dir_of(argv)
    if _spawned or project_dir is None or not (project_dir / CONFIG_FILE).is_file():
        return
    _spawned = True
    args = ["--project", str(project_dir), "--parent", str(os.getpid()), "--early-fork"]
    try:
        popen = _popen(project_dir, args) if _threaded() else _fork(project_dir, args)
    except OSError:
        return  # the supervisor starts its own, and reports what is wrong
    _early = EarlyZygote(project_dir, popen)


def _popen(project_dir: Path, args: list[str]) -> Any:
    import subprocess

    return subprocess.Popen([sys.executable, "-P", "-m", "worker.runtime.zygote", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=_zygote_env(),
                            cwd=str(project_dir))


def _fork(project_dir: Path, args: list[str]) -> ForkedProcess:
    cmd_r, cmd_w = os.pipe()
    out_r, out_w = os.pipe()
    for stream in (sys.stdout, sys.stderr):  # nothing written twice
        stream.flush()
    try:
        pid = os.fork()
    except OSError:
        for fd in (cmd_r, cmd_w, out_r, out_w):
            os.close(fd)
        raise
    if pid == 0:
        _become_zygote(project_dir, args, cmd_r, out_w)  # never returns
    os.close(cmd_r)
    os.close(out_w)
    return ForkedProcess(pid, os.fdopen(cmd_w, "wb"), os.fdopen(out_r, "rb"))


def _become_zygote(project_dir: Path, args: list[str], cmd_r: int, out_w: int) -> None:
    """The forked child: set up as ``python -P -m worker.runtime.zygote ARGS`` would be
    (cwd the project, protocol pipes on fds 0/1, no other fd), run the zygote, exit."""
    code = 1
    try:
        # Ctrl-C reaches the whole process group: the supervisor decides when we stop (as
        # zygote.main says, from its first lines on)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        os.dup2(cmd_r, 0)
        os.dup2(out_w, 1)
        os.closerange(3, 1 << 16)  # the pipes' other ends, anything the command had open
        os.chdir(project_dir)
        os.environ["PYTHONPATH"] = _zygote_env()["PYTHONPATH"]
        if not sys.flags.safe_path and sys.path:
            del sys.path[0]  # the command's folder (-m: its cwd), as -P leaves it out
        from worker.runtime import zygote

        sys.argv = [zygote.__file__, *args]
        code = zygote.main(args)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def take(project_dir: Path) -> EarlyZygote | None:
    """The early zygote, if it was started for ``project_dir`` and nobody took it yet."""
    global _early
    early = _early
    if early is None or early.project_dir != Path(project_dir).resolve():
        return None
    _early = None
    return early  # also when it exited already: its first line says why (discovery_error)
