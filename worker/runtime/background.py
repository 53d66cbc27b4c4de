"""Background tasks of one owner: started, referenced until done, then forgotten.

asyncio keeps only a weak reference to a task, so an unreferenced one may be collected while
it runs; keeping every task forever instead piles finished ones up until shutdown. This is the
one way the runtime starts a task it does not await.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
