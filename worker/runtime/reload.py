"""Hot reload for ``trigger dev``: watch the task dirs and the config, swap code versions.

A change starts a new zygote (:meth:`Supervisor.reload`); if its import fails the supervisor
emits ``reload_failed`` with the traceback and keeps serving the old version; otherwise the new
version is registered, new dequeues list it first, and the old executors finish their runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchfiles import Change, awatch

if TYPE_CHECKING:
    from worker.runtime.supervisor import Supervisor

CONFIG_FILE = "trigger_config.py"


def make_filter(project_dir: Path, dirs_of: Any) -> Any:
    """A watchfiles filter: .py files under the current ``dirs`` and the config file."""
    config = str(project_dir / CONFIG_FILE)

    def accept(change: Change, path: str) -> bool:
        if path == config:
            return True
        if not path.endswith(".py") or "__pycache__" in path:
            return False
        return any(path.startswith(str(project_dir / d) + "/") for d in dirs_of())

    return accept


async def watch_project(supervisor: Supervisor) -> None:
    project_dir = supervisor.project_dir

    def dirs() -> list[str]:
        pool = supervisor.current
        if pool is None:
            return ["trigger"]
        return list(pool.zygote.manifest.get("config", {}).get("dirs") or ["trigger"])

    async for _changes in awatch(project_dir, watch_filter=make_filter(project_dir, dirs),
                                 stop_event=supervisor.stop, debounce=300, step=50):
        if supervisor.stopping:
            return
        supervisor.emit({"type": "reloading", "files": sorted(p for _, p in _changes)})
        await supervisor.reload()
