"""Start the zygote first thing in ``trigger worker``, before the command's own imports.

Cold start (the command launched with a run queued → that run finished) used to be three long
steps in a row: the supervisor's interpreter imported the CLI and the runtime and checked the
API, only then did it start the zygote, which then imported the project and what executors
need (docs/cold-start.md). Spawned here instead, before anything heavy is
imported, the zygote imports on the second core while the supervisor does its part; the
supervisor adopts it at boot (:func:`worker.runtime.versions.adopt_early_zygote`) rather than
starting its own.

Only for the command line: the zygote is a plain ``subprocess.Popen`` (no event loop exists yet)
started exactly as :class:`worker.runtime.zygote_process.ZygoteProcess` starts one, except
that it learns the executors' socket path once adopted (the ``socket`` command, before the
first fork). A zygote that nobody adopts (the command failed before its boot) dies with this
process: it gets SIGKILL when its parent exits, and it exits when its command pipe closes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from worker.common.conventions import CONFIG_FILE


@dataclass
class EarlyZygote:
    project_dir: Path
    popen: subprocess.Popen[bytes]


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


def spawn(argv: list[str]) -> None:
    """Start the zygote of the project ``argv`` (``trigger worker``'s arguments) names.

    Does nothing when the folder has no config (the command reports that itself) or on a
    second call."""
    global _early, _spawned
    project_dir = project_dir_of(argv)
    if _spawned or project_dir is None or not (project_dir / CONFIG_FILE).is_file():
        return
    _spawned = True
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # as ZygoteProcess.start does
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    try:
        popen = subprocess.Popen(
            [sys.executable, "-P", "-m", "worker.runtime.zygote", "--project", str(project_dir),
             "--parent", str(os.getpid()), "--early-fork"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=str(project_dir))
    except OSError:
        return  # the supervisor starts its own, and reports what is wrong
    _early = EarlyZygote(project_dir, popen)


def take(project_dir: Path) -> EarlyZygote | None:
    """The early zygote, if it was started for ``project_dir`` and nobody took it yet."""
    global _early
    early = _early
    if early is None or early.project_dir != Path(project_dir).resolve():
        return None
    _early = None
    return early  # also when it exited already: its first line says why (discovery_error)

