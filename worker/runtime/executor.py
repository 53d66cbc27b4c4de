"""An executor: a process forked from the zygote that runs one attempt at a time.

After the fork it creates its own event loop (uvloop) and nothing else up front (task code
creates its DB pools / HTTP clients lazily, in this process). It connects to the supervisor's
unix socket, says ``hello`` with its pid, then serves frames (see :mod:`worker.runtime.framing`):

* in:  ``{"type": "execute", "run": <dequeued run>}`` → out: ``log`` frames while it runs, then
  ``{"type": "completion", "completion": {...}, "rss": bytes, "recycle": bool}``;
* in:  ``{"type": "shutdown"}`` (or EOF) → the process exits 0.

Socket I/O is blocking: nothing arrives during a run (the supervisor stops a run by killing the
process group), and log frames are written from the main thread inside a timer critical section
so that a max_duration interrupt can never cut a frame in half.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import time
from typing import Any

from worker.common import errors as codes
from worker.runtime.attempt import Attempt, failed_completion
from worker.runtime.capture import RunCapture
from worker.runtime.framing import recv_sync, send_sync
from worker.runtime.timeout import timer
from worker.sdk.context import Context, reset_current_context, set_current_context
from worker.sdk.errors import MaxDurationExceededError


class Channel:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def send(self, message: dict[str, Any]) -> None:
        with timer.critical():
            try:
                send_sync(self.sock, message)
            except OSError:
                os._exit(0)  # the supervisor is gone; nobody is left to report to


def _rss_bytes() -> int:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def run_attempt(run: dict[str, Any], discovered: Any, channel: Channel) -> dict[str, Any]:
    """Run one attempt with max_duration enforced; always returns a completion."""
    started = time.monotonic()
    task_def = discovered.tasks.get(run.get("task_id"))
    if task_def is None:
        missing = failed_completion(run, codes.internal_error(
            codes.COULD_NOT_FIND_TASK,
            f"task {run.get('task_id')!r} is not in this version "
            f"(tasks: {sorted(discovered.tasks)})"))
        missing["duration_ms"] = 0
        return missing
    limit = run.get("max_duration")
    if limit is None:
        limit = task_def.max_duration or discovered.config.max_duration
    attempt = Attempt(run, task_def, discovered.config)
    ctx_token = set_current_context(attempt.ctx if isinstance(attempt.ctx, Context) else None)
    capture = RunCapture(channel.send, run["run_id"], attempt.attempt_number,
                         discovered.config.log_level)
    completion: dict[str, Any] | None = None
    with capture:
        job = asyncio.get_running_loop().create_task(attempt.execute())
        timer.start(float(limit) if limit else None, job)
        try:
            completion = await job
        except (asyncio.CancelledError, MaxDurationExceededError):
            completion = None
        except BaseException as exc:  # a bug in the runtime itself: fail the attempt, loudly
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_RUN_UNCAUGHT_EXCEPTION, repr(exc)), skipped=False)
        finally:
            expired = timer.expired
            timer.stop()
        if expired or completion is None:
            completion = failed_completion(run, codes.internal_error(
                codes.MAX_DURATION_EXCEEDED,
                f"Run exceeded maximum duration of {limit}s"))
    reset_current_context(ctx_token)
    completion["duration_ms"] = int((time.monotonic() - started) * 1000)
    if expired:
        completion["_recycle"] = True
    return completion


def serve(socket_path: str, discovered: Any) -> int:
    """Main loop of an executor process; returns its exit code."""
    import uvloop

    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(socket_path)
    channel = Channel(sock)
    channel.send({"type": "hello", "pid": os.getpid()})
    while True:
        message = recv_sync(sock)
        if message is None or message.get("type") == "shutdown":
            return 0
        if message.get("type") != "execute":
            continue
        completion = loop.run_until_complete(run_attempt(message["run"], discovered, channel))
        recycle = bool(completion.pop("_recycle", False))
        channel.send({"type": "completion", "completion": completion, "rss": _rss_bytes(),
                      "recycle": recycle})
