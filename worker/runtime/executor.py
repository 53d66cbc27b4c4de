"""An executor: a process forked from the zygote that runs one attempt at a time.

After the fork it creates its own event loop (uvloop) and nothing else up front (task code
creates its DB pools / HTTP clients lazily, in this process). It connects to the supervisor's
unix socket, says ``hello`` with its pid, then serves frames (see :mod:`worker.runtime.framing`):

* in:  ``{"type": "execute", "run": <dequeued run>}`` → out: ``log`` frames while it runs, then
  ``{"type": "completion", "completion": {...}, "rss": bytes, "recycle": bool}``;
* in:  ``{"type": "shutdown"}`` (or EOF) → the process exits 0;
* signal ``SIGUSR1`` during a run: the run was canceled (see :mod:`worker.runtime.timeout`).

Socket I/O is blocking: no frame arrives during a run (a cancel is a signal; a run that does not
stop is ended by killing the process group), and log frames are written from the main thread
inside a timer critical section so that an interrupt can never cut a frame in half. The event
loop runs for the process's life (:func:`serve_frames`); waiting for the next frame blocks it.
Nothing the supervisor waits for goes after the completion frame: the attempt span ends after
it (its end time taken before).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import resource
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from worker.common import errors as codes
from worker.common.protocol import Completion, DequeuedRun, Wire
from worker.common.serialization import loads
from worker.common.settings import env_str
from worker.runtime import telemetry
from worker.runtime.attempt import Attempt
from worker.runtime.capture import RunCapture
from worker.runtime.framing import recv_sync, send_sync
from worker.runtime.outcomes import failed_completion
from worker.runtime.run_env import run_environment
from worker.runtime.timeout import timer
from worker.sdk import attempt_hooks, durable
from worker.sdk.context import (
    Context,
    begin_run_locals,
    end_run_locals,
    reset_current_context,
    set_current_context,
)
from worker.sdk.errors import MaxDurationExceededError, TaskRunCanceledError
from worker.sdk.logger import logger

if TYPE_CHECKING:
    from worker.runtime.discovery import Discovered

#: seconds ``attempt_hooks.attempt_ending`` may take before the completion goes without it
ENDING_TIMEOUT = 10.0


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: dict[str, Any]) -> None:
        if timer.task is None:
            # no attempt armed (the completion frame, after timer.stop()): no signal
            # interrupts this send, no critical section needed
            self._send(message)
            return
        with timer.critical():
            self._send(message)

    def _send(self, message: dict[str, Any]) -> None:
        try:
            send_sync(self.sock, message)
        except OSError:
            os._exit(0)  # the supervisor is gone; nobody is left to report to


#: (pid, fd) of this process's /proc statm, opened once: opening it per run was ~5 % of an
#: executor's CPU under drain (a forked child opens its own: the pid tells)
_statm: tuple[int, int] | None = None
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss_bytes() -> int:
    global _statm
    try:
        pid = os.getpid()
        if _statm is None or _statm[0] != pid:
            _statm = (pid, os.open(f"/proc/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC))
        return int(os.pread(_statm[1], 128, 0).split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _attempt_ending(ctx: Any) -> dict[str, Any]:
    """SDK features flush here (metadata...); bounded so a stuck flush cannot hold the run."""
    try:
        if not attempt_hooks.ending_may_wait():  # nothing to flush or settle: no timer
            return await attempt_hooks.attempt_ending(ctx)
        async with asyncio.timeout(ENDING_TIMEOUT):  # not wait_for: no task per attempt
            return await attempt_hooks.attempt_ending(ctx)
    except Exception as exc:
        logger.error(f"flushing the attempt's SDK state failed: {type(exc).__name__}: {exc}")
        return {}


def _merge(completion: Completion, extra: Wire) -> Completion:
    """What the SDK adds when an attempt ends: its metadata changes (worker.sdk.metadata)."""
    metadata = extra.get("metadata")
    return replace(completion, metadata=metadata) if metadata else completion


class Sink(Protocol):
    def send(self, message: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class AttemptEnd:
    """How an attempt ended: its completion, and whether this executor must be replaced (the
    attempt was stopped mid-flight: the process state is not trusted)."""

    run_id: str
    attempt_number: int
    #: None: the attempt checkpointed (suspended): the engine holds the run, nothing to report
    completion: Completion | None
    recycle: bool = False
    #: what the executor does once the completion frame is written (the attempt span's end:
    #: nothing the supervisor waits for goes before that frame)
    after: Callable[[], None] | None = None

    def wire(self) -> Wire:
        """The ``completion`` of the executor's frame to the supervisor."""
        if self.completion is None:
            return {"run_id": self.run_id, "attempt_number": self.attempt_number,
                    "suspended": True}
        return self.completion.to_wire()


async def run_attempt(message: Wire, discovered: Discovered, channel: Sink, *,
                      defer: bool = False) -> AttemptEnd:
    """Run one attempt of the dequeued run ``message`` (docs/protocol.md) with max_duration and
    cancellation handled; always returns a completion.

    Order: ``attempt_hooks.attempt_started`` → the attempt (middleware, hooks, run) →
    ``attempt_hooks.attempt_ending`` (merged into the completion). A cancel (SIGUSR1 from the
    supervisor) starts the ``on_cancel`` hooks and cancels the attempt's asyncio task.
    ``defer``: the attempt span ends in the returned ``after`` (called by the executor once the
    completion frame is written), not here.
    """
    started = time.monotonic()
    run = DequeuedRun.from_wire(message)
    task_def = discovered.tasks.get(run.task_id)
    if task_def is None:
        missing = failed_completion(run, codes.internal_error(
            codes.COULD_NOT_FIND_TASK,
            f"task {run.task_id!r} is not in this version "
            f"(tasks: {sorted(discovered.tasks)})"))
        return AttemptEnd(run.run_id, run.attempt_number, replace(missing, duration_ms=0))
    limit = run.max_duration
    if limit is None:
        limit = task_def.max_duration or discovered.config.max_duration
    attempt = Attempt(run, message["ctx"], task_def, discovered.config)
    ctx_token = set_current_context(attempt.ctx if isinstance(attempt.ctx, Context) else None)
    locals_token = begin_run_locals()
    capture = RunCapture(channel.send, run.run_id, attempt.attempt_number,
                         discovered.config.log_level)
    completion: Completion | None = None
    suspended = False
    loop = asyncio.get_running_loop()
    with capture, telemetry.attempt_span(run) as span:
        try:
            await attempt_hooks.attempt_started(attempt.ctx)
        except Exception as exc:
            logger.error(f"starting the attempt's SDK state failed: {type(exc).__name__}: {exc}")
        _wire_durable_waits(attempt, run, channel)
        job = loop.create_task(attempt.execute())
        cancel_hooks: list[asyncio.Task[None]] = []

        def on_cancel() -> None:
            # The attempt is parked in an await: run on_cancel alongside, and cancel the task.
            if not cancel_hooks:
                cancel_hooks.append(loop.create_task(attempt.run_on_cancel(_promise(job))))
            job.cancel("canceled")

        timer.start(float(limit) if limit else None, job, attempt.signal, on_cancel,
                    used=run.execution_ms / 1000)
        try:
            completion = await job
        except durable.Suspended:
            # checkpointed: the engine holds the run now; nothing to complete
            suspended = True
        except (asyncio.CancelledError, MaxDurationExceededError, TaskRunCanceledError):
            completion = None
        except BaseException as exc:  # a bug in the runtime itself: fail the attempt, loudly
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_RUN_UNCAUGHT_EXCEPTION, repr(exc)), skipped=False)
        finally:
            expired, canceled = timer.expired, timer.canceled
            timer.stop()
        if canceled:
            # Sync code was interrupted in place: its on_cancel hooks run now, after it.
            if not cancel_hooks:
                cancel_hooks.append(loop.create_task(attempt.run_on_cancel(_promise(job))))
            await asyncio.gather(*cancel_hooks, return_exceptions=True)
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_RUN_CANCELLED, "the run was canceled while it executed"))
        elif expired or (completion is None and not suspended):
            completion = failed_completion(run, codes.internal_error(
                codes.MAX_DURATION_EXCEEDED,
                f"Run exceeded maximum duration of {limit}s"))
        extra = await _attempt_ending(attempt.ctx)
        if completion is not None:
            completion = _merge(completion, extra)
    end_run_locals(locals_token)
    reset_current_context(ctx_token)
    if completion is not None:
        # built for this attempt, seen by nothing else yet: set in place (dataclasses.replace
        # was ~2 % of an executor's CPU per run)
        object.__setattr__(completion, "duration_ms",
                           int((time.monotonic() - started) * 1000))
    after = None
    if span is not None:
        if defer:
            after = functools.partial(telemetry.end_attempt, span, completion, time.time_ns())
        else:
            telemetry.end_attempt(span, completion)
    # stopped mid-flight: its state is not trustworthy
    return AttemptEnd(run.run_id, run.attempt_number, completion, recycle=expired or canceled,
                      after=after)


def _wire_durable_waits(attempt: Attempt, run: DequeuedRun, channel: Sink) -> None:
    """Give the run's durable state (``worker.sdk.durable``) the attempt's wait hooks, and a
    clock that stops while the run waits, here and in the supervisor's backstop."""
    state = durable.maybe_state()
    if state is None:
        return
    run_id = run.run_id

    async def on_wait(info: dict[str, Any]) -> None:
        await attempt.propagate_hook("on_wait", wait=info)

    async def on_resume(info: dict[str, Any]) -> None:
        await attempt.propagate_hook("on_resume", wait=info)

    def pause() -> None:
        timer.pause()
        channel.send({"type": "clock", "run_id": run_id, "paused": True})

    def resume() -> None:
        timer.resume()
        channel.send({"type": "clock", "run_id": run_id, "paused": False})

    state.on_wait.append(on_wait)
    state.on_resume.append(on_resume)
    state.pause_clock, state.resume_clock = pause, resume
    state.execution_ms = lambda: int(timer.execution_seconds() * 1000)
    state.resumed = run.resumed


def _promise(job: asyncio.Task[Any]) -> asyncio.Future[Any]:
    """What ``on_cancel`` gets as ``run_promise``: resolves with the run's output, if it has
    one, once the attempt ends (it never raises into the hook)."""
    fut: asyncio.Future[Any] = job.get_loop().create_future()

    def done(t: asyncio.Task[Any]) -> None:
        if fut.done():
            return
        result = None
        if not t.cancelled() and t.exception() is None:
            completion: Completion = t.result()
            if completion.ok:
                result = loads(completion.output, completion.output_type or "application/json")
        fut.set_result(result)

    job.add_done_callback(done)
    return fut


def serve(socket_path: str, discovered: Discovered) -> int:
    """Main loop of an executor process; returns its exit code."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    channel = Channel(sock)
    timer.install_cancel_handler()
    from worker.sdk import client

    # after the fork, in this process only (worker/runtime/telemetry.py)
    telemetry.setup(discovered.config, client.api_url(), env_str("TRIGGER_SECRET_KEY"))
    channel.send({"type": "hello", "pid": os.getpid(), "rss": _rss_bytes()})
    code = loop.run_until_complete(serve_frames(lambda: recv_sync(sock), discovered, channel))
    telemetry.shutdown()
    return code


async def serve_frames(receive: Callable[[], Wire | None], discovered: Discovered,
                       channel: Sink) -> int:
    """Run the ``execute`` frames ``receive`` returns, one at a time, until it returns None or
    a ``shutdown`` frame.

    One loop run for the executor's life: a ``run_until_complete`` per attempt set up and tore
    down uvloop's signal plumbing (a socketpair, the wakeup fd) every time, ~a quarter of an
    executor's CPU per no-op run. Waiting for the next frame blocks the loop, as before: no
    run's code runs between two attempts. Each attempt runs in a task of its own, in a fresh
    copy of this context, so what it sets in context variables ends with it (as with a loop
    run per attempt); that task writes the completion frame, reads the next frame and starts
    the next attempt's task itself (no loop step per run to hand over to a serving task)."""
    loop = asyncio.get_running_loop()
    base = contextvars.copy_context()
    done: asyncio.Future[int] = loop.create_future()
    current: list[asyncio.Task[None]] = []  # the attempt running now, referenced

    def next_attempt() -> None:
        while True:
            message = receive()
            if message is None or message.get("type") == "shutdown":
                done.set_result(0)
                return
            if message.get("type") == "execute":
                break
        current[:] = [loop.create_task(attempt(message["run"]), context=base.copy())]

    async def attempt(run: Wire) -> None:
        try:
            end = await _execute(run, discovered, channel)
            channel.send({"type": "completion", "completion": end.wire(),
                          "rss": _rss_bytes(), "recycle": end.recycle})
            if end.after is not None:
                end.after()  # what could wait until the completion was on its way
            next_attempt()
        except BaseException as exc:  # a bug of the runtime's: the executor stops, loudly
            if not done.done():
                done.set_exception(exc)

    next_attempt()
    return await done


async def _execute(run: Wire, discovered: Discovered, channel: Sink) -> AttemptEnd:
    env_vars = run.get("env_vars")
    if env_vars:
        with run_environment(env_vars):
            end = await run_attempt(run, discovered, channel, defer=True)
    else:
        end = await run_attempt(run, discovered, channel, defer=True)
    if end.recycle:  # this process is about to go: its spans go first
        if end.after is not None:
            end.after()
            end = replace(end, after=None)
        telemetry.flush()
    return end
