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

Cancellation uses the same machinery: the supervisor sends ``SIGUSR1`` (:data:`CANCEL_SIGNAL`)
when the engine reports the run canceled. Code running inside the attempt gets
:class:`TaskRunCanceledError` raised where it is (so even a sync task that never yields is
interrupted); an attempt parked in an ``await`` is handed to ``on_cancel`` (the executor's
callback), which runs the ``on_cancel`` hooks and cancels the asyncio task.
"""

from __future__ import annotations

import _signal
import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

from worker.sdk.context import AbortSignal
from worker.sdk.errors import MaxDurationExceededError, TaskRunCanceledError

#: values at or above this mean "no limit" (Trigger.dev's ``timeout.None``)
NO_LIMIT = 2**31 - 1
REFIRE_SECONDS = 1.0
#: the supervisor's "this run was canceled" signal to an executor
CANCEL_SIGNAL = signal.SIGUSR1
_SIGALRM = int(signal.SIGALRM)


class AttemptTimer:
    def __init__(self) -> None:
        self.limit: float | None = None
        self.expired = False
        self.canceled = False
        self.task: asyncio.Task[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.abort_signal: AbortSignal | None = None
        #: called on the loop when a cancel arrives while the attempt awaits something
        self.on_cancel: Callable[[], None] | None = None
        self._critical = 0
        self._pending = False
        self._pending_cancel = False
        self._remaining: float | None = None
        self._started = 0.0
        #: execution time accounting (waits excluded), kept with or without a limit
        self._carried = 0.0
        self._paused_at: float | None = None
        self._paused_total = 0.0

    # --- arming -----------------------------------------------------------------------

    def start(self, limit: float | None, task: asyncio.Task[Any],
              abort_signal: AbortSignal | None = None,
              on_cancel: Callable[[], None] | None = None, used: float = 0.0) -> None:
        """Arm the limit for an attempt that has already used ``used`` seconds of execution
        (before a checkpoint: the resumed lease carries them)."""
        self.expired = False
        self._started = time.monotonic()
        self._carried = max(0.0, used)
        self._paused_at = None
        self._paused_total = 0.0
        self._remaining = None
        self.canceled = False
        self._pending = False
        self._pending_cancel = False
        self.task = task
        self.loop = task.get_loop()
        self.abort_signal = abort_signal
        self.on_cancel = on_cancel
        self.limit = limit if limit and 0 < limit < NO_LIMIT else None
        if self.limit is None:
            return
        if threading.current_thread() is not threading.main_thread():
            self.limit = None  # no signals there (worker.testing from a thread): no limit
            return
        # installed again only when something replaced it (signal.signal's enum conversions
        # were ~3 % of an executor's CPU per run)
        if _signal.getsignal(_SIGALRM) != self._on_alarm:
            signal.signal(signal.SIGALRM, self._on_alarm)
        # a resumed attempt that has no time left stops at once
        signal.setitimer(signal.ITIMER_REAL, max(0.001, self.limit - self._carried))

    def stop(self) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        self.task = None
        self.limit = None
        self.on_cancel = None
        self.abort_signal = None

    def install_cancel_handler(self) -> None:
        """Executor start-up: route :data:`CANCEL_SIGNAL` to this timer."""
        signal.signal(CANCEL_SIGNAL, self._on_cancel_signal)

    def pause(self) -> None:
        """Stop the clock (a wait begins)."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()
        if self.limit is None or self.expired or self._remaining is not None:
            return
        remaining, _ = signal.setitimer(signal.ITIMER_REAL, 0)
        self._remaining = remaining or 0.001

    def resume(self) -> None:
        if self._paused_at is not None:
            self._paused_total += time.monotonic() - self._paused_at
            self._paused_at = None
        if self._remaining is not None and self.task is not None:
            signal.setitimer(signal.ITIMER_REAL, self._remaining)
            self._remaining = None

    def execution_seconds(self) -> float:
        """The attempt's execution time so far: what it used before a checkpoint plus this
        process's time, waits excluded."""
        now = time.monotonic()
        paused = self._paused_total + (now - self._paused_at if self._paused_at else 0.0)
        return self._carried + now - self._started - paused

    # --- critical sections ------------------------------------------------------------

    @contextlib.contextmanager
    def critical(self) -> Iterator[None]:
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        if self._critical == 0 and self._pending_cancel:
            self._pending_cancel = False
            self._cancel(None)
        if self._critical == 0 and self._pending:
            self._pending = False
            self._interrupt(None)

    # --- the handler ------------------------------------------------------------------

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        if self.task is None or self.task.done():
            return
        self.expired = True
        self._mark_aborted("max_duration")
        # Fire again while the attempt still runs (code may swallow the first exception).
        signal.setitimer(signal.ITIMER_REAL, REFIRE_SECONDS)
        if self._critical:
            self._pending = True
            return
        self._interrupt(frame)

    def _interrupt(self, frame: FrameType | None) -> None:
        self._stop_attempt(MaxDurationExceededError(self._message()), "max_duration")

    def _stop_attempt(self, error: BaseException, reason: str,
                      from_loop: Callable[[], object] | None = None) -> None:
        """Stop the attempt from a signal handler: raise ``error`` right here when the attempt's
        own code is what runs now (sync or CPU-bound code), else have the loop run ``from_loop``
        (default: cancel the attempt's task with ``reason``)."""
        task = self.task
        if task is None or task.done():
            return
        running = None
        with contextlib.suppress(RuntimeError):
            running = asyncio.current_task(self.loop)
        if running is task:
            raise error
        # Loop idle (or another task running): act from the loop itself.
        assert self.loop is not None
        self.loop.call_soon_threadsafe(from_loop or (lambda: task.cancel(reason)))

    def _mark_aborted(self, reason: str) -> None:
        sig = self.abort_signal
        if sig is None or sig.aborted:
            return
        sig.mark(reason)  # flag only: waking futures is left to the loop
        if self.loop is not None:
            self.loop.call_soon_threadsafe(sig.wake)

    def _on_cancel_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.task is None or self.task.done() or self.canceled:
            return
        self.canceled = True
        self._mark_aborted("canceled")
        if self._critical:
            self._pending_cancel = True
            return
        self._cancel(frame)

    def _cancel(self, frame: FrameType | None) -> None:
        self._stop_attempt(TaskRunCanceledError("the run was canceled"), "canceled",
                           self.on_cancel)

    def _message(self) -> str:
        return f"Run exceeded its maximum duration of {self.limit or '?'}s"


#: the executor's single timer (one attempt at a time per process)
timer = AttemptTimer()
