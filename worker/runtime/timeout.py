"""``max_duration`` enforcement inside an executor.

A wall-clock interval timer (``signal.setitimer(ITIMER_REAL)``) fires at the limit. The SIGALRM
handler runs in the main thread between two bytecodes of whatever is executing:

* if the attempt's asyncio task is the one executing (task code running, including sync
  ``def`` tasks and CPU-bound loops that never yield), the handler raises
  :class:`MaxDurationExceededError` right there, inside the task, so ``finally`` blocks run;
* if the event loop is idle (the task awaits I/O or a sleep) or another task is running, it
  cancels the attempt task; the runner turns that cancellation into the same error;
* inside a runtime critical section (writing a frame to the supervisor) it defers: raising in
  the middle of ``sendall`` would corrupt the stream.

The timer re-fires every second while the attempt is still running, so task code that swallows
the exception is interrupted again; the supervisor kills the process group after a grace period
if nothing helps. ``pause``/``resume`` let durable waits exclude their time from the budget.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

from worker.sdk.errors import MaxDurationExceededError

#: values at or above this mean "no limit" (Trigger.dev's ``timeout.None``)
NO_LIMIT = 2**31 - 1
REFIRE_SECONDS = 1.0


class AttemptTimer:
    def __init__(self) -> None:
        self.limit: float | None = None
        self.expired = False
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._critical = 0
        self._pending = False
        self._remaining: float | None = None
        self._started = 0.0

    # --- arming -----------------------------------------------------------------------

    def start(self, limit: float | None, task: asyncio.Task[Any]) -> None:
        self.expired = False
        self._pending = False
        self.task = task
        self.loop = task.get_loop()
        self.limit = limit if limit and 0 < limit < NO_LIMIT else None
        if self.limit is None:
            return
        signal.signal(signal.SIGALRM, self._on_alarm)
        self._started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, self.limit)

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.task = None
        self.limit = None

    def pause(self) -> None:
        """Stop the clock (a durable wait begins)."""
        if self.limit is None or self.expired:
            return
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        self._remaining = remaining or 0.001

    def resume(self) -> None:
        if self._remaining is not None and self.task is not None:
            signal.setitimer(signal.ITIMER_REAL, self._remaining)
            self._remaining = None

    # --- critical sections ------------------------------------------------------------

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self._pending:
            self._pending = False
            self._interrupt(None)

    # --- the handler ------------------------------------------------------------------

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.task is None or self.task.done():
            return
        self.expired = True
        # Fire again while the attempt still runs (code may swallow the first exception).
        signal.setitimer(signal.ITIMER_REAL, REFIRE_SECONDS)
        if self._critical:
            self._pending = True
            return
        self._interrupt(frame)

    def _interrupt(self, frame: FrameType | None) -> None:
        task = self.task
        if task is None or task.done():
            return
        running = None
        with contextlib.suppress(RuntimeError):
            running = asyncio.current_task(self.loop)
        if running is task:
            raise MaxDurationExceededError(self._message())
        # Loop idle (or another task running): cancel the attempt task from the loop itself.
        assert self.loop is not None
        self.loop.call_soon_threadsafe(task.cancel, "max_duration")

    def _message(self) -> str:
        return f"Run exceeded its maximum duration of {self.limit or '?'}s"


#: the executor's single timer (one attempt at a time per process)
timer = AttemptTimer()
