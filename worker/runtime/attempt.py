"""One attempt of one run, in the order of docs/triggerdev-semantics.md, "Hooks".

    payload → (schema) → middleware chain (global, then task) wrapping:
        init (global then task, merged) → on_start (attempt 1) → on_start_attempt → run
        (a resumed attempt — replayed after a checkpoint — skips on_start / on_start_attempt;
        on_wait / on_resume are fired by the waits, see worker.sdk.durable)
        success: on_success → on_complete({ok: True, data}) → cleanup
        error:   catch_error (task, then global) → if final: on_failure →
                 on_complete({ok: False, error}); then cleanup

Errors in on_success / on_failure / on_complete are logged and swallowed; catch_error raising is
HANDLE_ERROR_ERROR; an error escaping a middleware is TASK_MIDDLEWARE_ERROR. The retry decision
(docs/triggerdev-semantics.md, "Retry decision") is made here; the engine applies it.
max_duration and cancellation are handled by the caller
(:func:`worker.runtime.executor.run_attempt`): hooks other than ``on_cancel`` never run
for a timed-out or canceled attempt.

``MemoryError`` / ``OutOfMemoryError`` raised by the task become ``TASK_PROCESS_OOM_KILLED``:
retried only on the bigger machine named by ``retry.out_of_memory.machine`` (the completion
carries ``retry_machine``), otherwise final (CRASHED) with ``on_failure``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from worker.common import errors as codes
from worker.common.protocol import Completion, DequeuedRun, Wire
from worker.common.retry import MAX_ATTEMPTS_HARD_CAP, next_retry_delay_ms
from worker.common.serialization import dumps, loads
from worker.runtime.outcomes import oom_retry_machine
from worker.sdk import global_hooks
from worker.sdk.config import Config
from worker.sdk.context import AbortSignal, Context
from worker.sdk.durable import ConcurrentWaitError, NonDeterministicError
from worker.sdk.errors import (
    AbortTaskRunError,
    ApiError,
    CompleteTaskWithOutput,
    MaxDurationExceededError,
    OutOfMemoryError,
    TaskRunCanceledError,
)
from worker.sdk.hook_signatures import call_hook, call_run
from worker.sdk.logger import logger
from worker.sdk.task import Task
from worker.sdk.tracing import operation

#: exceptions that stop an attempt from outside: never handled by hooks, always re-raised
STOP = (MaxDurationExceededError, TaskRunCanceledError)
#: retries due sooner than this ask the engine to keep the lease and run here again
IN_PLACE_RETRY_MS = 30_000


def error_to_wire(error: object) -> Wire:
    """TaskRunError wire form of an exception (or of a replacement given by catch_error)."""
    if isinstance(error, dict) and "type" in error:
        return error
    if isinstance(error, str):
        return {"type": "STRING_ERROR", "raw": error}
    if isinstance(error, BaseException):
        return {
            "type": "BUILT_IN_ERROR",
            "name": type(error).__name__,
            "message": str(error),
            "stackTrace": "".join(traceback.format_exception(error)),
        }
    return {"type": "STRING_ERROR", "raw": repr(error)}


class _Outcome:
    """What the inner part of the chain produced (middleware sees only ``next()``)."""

    def __init__(self) -> None:
        self.completion: Completion | None = None


class Attempt:
    def __init__(self, run: DequeuedRun, ctx: Wire, task: Task, config: Config) -> None:
        """``ctx`` is the run's context as it came (the task's ``ctx`` reads it as is)."""
        self.run = run
        self.task = task
        self.config = config
        self.globals = _global_hooks(config)
        self.attempt_number = run.attempt_number
        self.ctx = Context(ctx)
        self.payload: Any = None
        self.init: dict[str, Any] = {}
        self.signal = AbortSignal()

    # --- helpers -------------------------------------------------------------------------

    def _available(self, **extra: Any) -> dict[str, Any]:
        return {"payload": self.payload, "ctx": self.ctx, "task": self.task.id,
                "init": self.init, "signal": self.signal, **extra}

    def _hooks(self, name: str) -> list[Callable[..., Any]]:
        """Global hook first, then the task's (catch_error reverses this)."""
        first, second = self.globals.get(name), self.task.hooks.get(name)
        if first is None:
            return _NONE if second is None else [second]
        return [first] if second is None else [first, second]

    async def _swallowing(self, name: str, **extra: Any) -> None:
        for hook in self._hooks(name):
            try:
                with _hook_span(name):
                    await call_hook(hook, self._available(**extra))
            except STOP:
                raise
            except Exception as exc:
                logger.error(f"{name} hook raised (ignored): {type(exc).__name__}: {exc}",
                             hook=name, stack="".join(traceback.format_exception(exc)))

    async def propagate_hook(self, name: str, **extra: Any) -> None:
        """Run a hook whose errors fail the attempt (on_wait / on_resume, called by waits)."""
        await self._propagating(name, **extra)

    async def _propagating(self, name: str, **extra: Any) -> None:
        for hook in self._hooks(name):
            with _hook_span(name):
                await call_hook(hook, self._available(**extra))

    # --- entry ---------------------------------------------------------------------------

    async def execute(self) -> Completion:
        try:
            self.payload = self._parse_payload()
        except Exception as exc:
            return self._failed(
                codes.internal_error(codes.TASK_INPUT_ERROR, f"{type(exc).__name__}: {exc}",
                                     "".join(traceback.format_exception(exc))),
                skipped=True,
            )
        chain = self._hooks_middleware()
        if not chain:  # no middleware: the body, without the chain's frames
            try:
                return await self._body()
            except STOP:
                raise
            except Exception as exc:  # as below (the chain's end raised)
                return self._middleware_failed(exc)
        outcome = _Outcome()

        async def inner() -> None:
            outcome.completion = await self._body()

        async def call(index: int) -> None:
            if index == len(chain):
                await inner()
                return
            await call_hook(chain[index], self._available(next=lambda: call(index + 1)))

        try:
            await call(0)
        except STOP:
            raise
        except Exception as exc:
            if outcome.completion is not None:
                # The attempt itself ended; a middleware failed on the way out.
                logger.error(f"middleware raised after the run: {exc}")
            else:
                return self._middleware_failed(exc)
        if outcome.completion is None:
            return self._failed(codes.internal_error(
                codes.TASK_MIDDLEWARE_ERROR, "a middleware returned without awaiting next()"))
        return outcome.completion

    def _middleware_failed(self, exc: Exception) -> Completion:
        return self._failed(codes.internal_error(codes.TASK_MIDDLEWARE_ERROR,
                                                 f"{type(exc).__name__}: {exc}",
                                                 "".join(traceback.format_exception(exc))))

    def _hooks_middleware(self) -> list[Callable[..., Any]]:
        return self._hooks("middleware")

    def _parse_payload(self) -> Any:
        data = loads(self.run.payload, self.run.payload_type or "application/json")
        if self.task.schema is not None:
            return self.task.schema.model_validate(data)
        return data

    async def _body(self) -> Completion:
        try:
            for hook in self._hooks("init"):
                with _hook_span("init"):
                    result = await call_hook(hook, self._available())
                if isinstance(result, dict):
                    self.init = {**self.init, **result}
            # A checkpointed attempt resumes by replaying `run` from the top in a new process
            # (init and middleware run again there); its start hooks ran when it began.
            if not self.run.resumed:
                if self.attempt_number == 1 and self._hooks("on_start"):
                    await self._propagating("on_start")
                if self._hooks("on_start_attempt"):
                    await self._propagating("on_start_attempt")
            output = await call_run(self.task.run, self.payload, self.ctx,
                                    {"init": self.init, "task": self.task.id,
                                     "signal": self.signal})
        except CompleteTaskWithOutput as done:
            output = done.output
        except STOP:
            raise
        except Exception as exc:
            return await self._on_error(exc)
        return await self._on_success(output)

    async def _on_success(self, output: Any) -> Completion:
        try:
            data, data_type = dumps(output)
        except Exception as exc:
            return await self._finish_failure(
                codes.internal_error(codes.TASK_OUTPUT_ERROR, f"{type(exc).__name__}: {exc}",
                                     "".join(traceback.format_exception(exc))),
                skipped=True, exc=exc)
        if self._hooks("on_success"):
            await self._swallowing("on_success", output=output)
        if self._hooks("on_complete"):
            await self._swallowing("on_complete", result={"ok": True, "data": output})
        if self._hooks("cleanup"):
            await self._cleanup()
        return Completion(self.run.run_id, self.attempt_number, True, output=data,
                          output_type=data_type)

    async def _cleanup(self) -> None:
        # Reference: cleanup errors propagate; we log them but keep the attempt's outcome,
        # since the run's result was already decided.
        for hook in self._hooks("cleanup"):
            try:
                with _hook_span("cleanup"):
                    await call_hook(hook, self._available())
            except STOP:
                raise
            except Exception as exc:
                logger.error(f"cleanup hook raised: {type(exc).__name__}: {exc}",
                             stack="".join(traceback.format_exception(exc)))

    # --- failure path (docs/triggerdev-semantics.md, "Retry decision") ------------------

    def _retry_options(self) -> Wire:
        retry = dict(self.run.retry or self.task.retry or self.config.retries.default or {})
        if self.run.max_attempts is not None:
            retry["max_attempts"] = self.run.max_attempts
        return retry

    def _default_skip(self, exc: BaseException, retry: Wire) -> bool:
        if isinstance(exc, AbortTaskRunError | NonDeterministicError | ConcurrentWaitError):
            return True  # retrying cannot help
        if isinstance(exc, ApiError) and 400 <= exc.status < 500 and exc.status not in (408, 429):
            return True
        in_dev = self.run.ctx.environment.type == "DEVELOPMENT"
        if in_dev and not self.config.retries.enabled_in_dev:
            return True
        return self._no_attempts_left(retry)

    def _no_attempts_left(self, retry: Wire) -> bool:
        max_attempts = int(retry.get("max_attempts") or 1)
        if self.run.is_final_attempt:
            return True
        return self.attempt_number >= min(max_attempts, MAX_ATTEMPTS_HARD_CAP)

    async def _on_error(self, exc: Exception) -> Completion:
        retry = self._retry_options()
        if isinstance(exc, MemoryError | OutOfMemoryError):
            return await self._out_of_memory(exc, retry)
        skipped = self._default_skip(exc, retry)
        delay: int | None = None if skipped else next_retry_delay_ms(retry, self.attempt_number)
        wire = error_to_wire(exc)
        # catch_error: the task's hook first, then the global one; first non-None wins.
        catchers = [h for h in (self.task.hooks.get("catch_error"),
                                self.globals.get("catch_error")) if h is not None]
        for hook in catchers:
            try:
                with _hook_span("catch_error"):
                    decision = await call_hook(hook, self._available(
                        error=exc, retry=retry, retry_delay_in_ms=delay,
                        retry_at=None if delay is None else _at(delay)))
            except STOP:
                raise
            except Exception as hook_exc:
                await self._cleanup()
                return self._failed(codes.internal_error(
                    codes.HANDLE_ERROR_ERROR, f"catch_error raised {type(hook_exc).__name__}: "
                    f"{hook_exc}", "".join(traceback.format_exception(hook_exc))), skipped=True)
            if decision is None:
                continue
            if not isinstance(decision, dict):
                logger.warn("catch_error returned a non-dict; ignored", value=repr(decision))
                break
            if decision.get("error") is not None:
                wire = error_to_wire(decision["error"])
            if decision.get("skip_retrying"):
                skipped, delay = True, None
            elif decision.get("retry_at") is not None:
                skipped, delay = False, _delay_until(decision["retry_at"])
            elif decision.get("retry_delay_in_ms") is not None:
                skipped, delay = False, max(0, int(decision["retry_delay_in_ms"]))
            elif isinstance(decision.get("retry"), dict):
                retry = {**retry, **decision["retry"]}
                skipped = self._no_attempts_left(retry)
                delay = None if skipped else next_retry_delay_ms(retry, self.attempt_number)
            break
        if skipped or self._no_attempts_left(retry):
            return await self._finish_failure(wire, skipped=True, exc=exc)
        await self._cleanup()
        return self._failed(wire, delay_ms=delay)

    async def _out_of_memory(self, exc: BaseException, retry: Wire) -> Completion:
        wire = codes.internal_error(codes.TASK_PROCESS_OOM_KILLED,
                                    f"{type(exc).__name__}: {exc}",
                                    "".join(traceback.format_exception(exc)))
        machine = oom_retry_machine(self.run, retry)
        if machine is None:
            return await self._finish_failure(wire, skipped=True, exc=exc)
        await self._cleanup()
        return replace(self._failed(wire), retry_machine=machine)

    async def run_on_cancel(self, run_promise: Any) -> None:
        """``on_cancel`` hooks (global, then the task's); errors are logged."""
        await self._swallowing("on_cancel", run_promise=run_promise)

    async def _finish_failure(self, wire: Wire, *, skipped: bool,
                              exc: BaseException) -> Completion:
        await self._swallowing("on_failure", error=exc)
        await self._swallowing("on_complete", result={"ok": False, "error": exc})
        await self._cleanup()
        return self._failed(wire, skipped=skipped)

    def _failed(self, error: Wire, *, skipped: bool = False,
                delay_ms: int | None = None) -> Completion:
        return Completion(self.run.run_id, self.attempt_number, False, error=error,
                          retry_delay_ms=delay_ms, skipped_retrying=skipped,
                          # a short retry runs again on this worker, keeping the lease
                          # (docs/protocol.md, "/complete")
                          retry_in_place=delay_ms is not None and delay_ms < IN_PLACE_RETRY_MS)


_NONE: list[Callable[..., Any]] = []  # no hook (never changed)

#: (config, registrations' generation, its global hooks): combining them anew for every
#: attempt was ~3 % of an executor's CPU per run; a hook registered since is seen (generation)
_globals: tuple[Config, int, dict[str, Callable[..., Any]]] | None = None


def _global_hooks(config: Config) -> dict[str, Callable[..., Any]]:
    global _globals
    generation = global_hooks.generation()
    if _globals is None or _globals[0] is not config or _globals[1] != generation:
        _globals = (config, generation, config.global_hooks())
    return _globals[2]


def _hook_span(name: str) -> Any:
    """A hook's span under the attempt span (worker/sdk/tracing.py)."""
    return operation(f"{name}()", {"trigger.span.kind": "hook", "trigger.hook": name})


def _at(delay_ms: int) -> datetime:
    return datetime.fromtimestamp(time.time() + delay_ms / 1000, UTC)


def _delay_until(when: Any) -> int:
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if isinstance(when, datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0, int((when.timestamp() - time.time()) * 1000))
    return max(0, int(float(when)))
