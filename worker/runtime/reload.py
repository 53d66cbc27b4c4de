"""Hot reload for ``trigger dev``: watch the task dirs and the config, swap code versions.

A change calls ``reload`` (the supervisor's: a new zygote; if its import fails it emits
``reload_failed`` with the traceback and keeps serving the old version; otherwise the new
version is registered, new dequeues list it, and the old executors finish their runs).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from worker.common.conventions import CONFIG_FILE
from worker.common.protocol import Wire

if TYPE_CHECKING:  # imported when watching starts: `trigger worker` never watches
    from watchfiles import Change

WatchFilter = Callable[["Change", str], bool]


def make_filter(project_dir: Path, dirs_of: Callable[[], list[str]]) -> WatchFilter:
    """A watchfiles filter: .py files under the current ``dirs`` and the config file."""
    config = str(project_dir / CONFIG_FILE)

    def accept(change: Change, path: str) -> bool:
        if path == config:
            return True
        if not path.endswith(".py") or "__pycache__" in path:
            return False
        return any(path.startswith(str(project_dir / d) + "/") for d in dirs_of())

    return accept


async def watch_project(project_dir: Path, *, dirs: Callable[[], list[str]],
                        stop: asyncio.Event, stopping: Callable[[], bool],
                        emit: Callable[[Wire], None],
                        reload: Callable[[], Awaitable[None]]) -> None:
    """Until ``stop``: on each (debounced) change under ``dirs()`` or to the config, emit
    ``reloading`` and await ``reload()``."""
    from watchfiles import awatch

    async for changes in awatch(project_dir, watch_filter=make_filter(project_dir, dirs),
                                stop_event=stop, debounce=300, step=50):
        if stopping():
            return
        emit({"type": "reloading", "files": sorted(p for _, p in changes)})
        await reload()
