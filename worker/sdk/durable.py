"""Durable operations inside a run: the journal, in-place waits and checkpoints
(docs/architecture.md, "Waits and checkpoints").

Every durable operation of an attempt (a wait, a child trigger, a token, a memoised step) takes
the next sequence number. A fresh attempt records each operation in the engine's journal; a
resumed attempt *replays*: ``run`` starts over and each operation finds its recorded outcome at
its position and returns it at once, until execution passes the last one. An operation that
does not match the recorded one at its position (another kind, another child task, another step
name) fails the run with NON_DETERMINISTIC.

Each attempt has its own journal (docs/run-states.md, "Retries and the journal"): a retry runs
the task from the top and does every operation anew (waits wait again, children are triggered
again, steps run again); idempotency keys are how an operation happens once across attempts.

A wait on a token or a child is held in place for up to ``checkpoint_after`` seconds
(``TRIGGER_CHECKPOINT_AFTER``, default 10): most children finish in milliseconds. Past that,
or at once for a duration wait, the run *checkpoints*: the engine releases its lease and its
concurrency slot, and the executor unwinds the task by raising :class:`Suspended` (a
``BaseException``, so ``except Exception`` in task code does not swallow it). When the
waitpoints complete, the run is queued again with its original queue time and replayed.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from worker.sdk import attempt_hooks, tracing, transport
from worker.sdk.context import Context, current_context
from worker.sdk.errors import Suspended
from worker.sdk.journal import JournalEntry, Waitpoint
from worker.sdk.settings import sdk_settings
from worker.sdk.transport import JsonBody

NON_DETERMINISTIC = "NON_DETERMINISTIC"
TASK_DID_CONCURRENT_WAIT = "TASK_DID_CONCURRENT_WAIT"


__all__ = ["Suspended"]  # re-exported: the runtime catches ``durable.Suspended``


class NonDeterministicError(Exception):
    """A replay did an operation that differs from the journal at the same position."""

    code = NON_DETERMINISTIC


class ConcurrentWaitError(Exception):
    """Two waits at once in one run: use a batch (``batch_trigger_and_wait``) instead."""

    code = TASK_DID_CONCURRENT_WAIT


Hook = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class RunState:
    """The durable state of the attempt executing in this context."""

    run_id: str
    attempt_number: int
    instance_id: str | None
    journal: dict[int, JournalEntry]
    next_seq: int = 0
    waiting: bool = False
    #: set by the runtime: wait hooks and the max_duration clock (waits do not count)
    on_wait: list[Hook] = field(default_factory=list)
    on_resume: list[Hook] = field(default_factory=list)
    pause_clock: Callable[[], None] | None = None
    resume_clock: Callable[[], None] | None = None
    #: the attempt's execution time so far in ms, waits excluded (sent with a checkpoint)
    execution_ms: Callable[[], int] | None = None
    #: this process resumes the attempt after a checkpoint (set by the runtime)
    resumed: bool = False
    #: in-process sleeps (short duration waits) under way
    sleeping: int = 0

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    @property
    def replaying(self) -> bool:
        return self.next_seq < len(self.journal)

    def checkpointed_at(self, seq: int) -> bool:
        """Is ``seq`` the wait this attempt checkpointed at? (A resumed run suspended at the
        last operation of its journal: nothing is recorded after a checkpoint.)"""
        return self.resumed and bool(self.journal) and seq == max(self.journal)


_state: contextvars.ContextVar[RunState | None] = contextvars.ContextVar(
    "trigger_durable_state", default=None
)


def checkpoint_after() -> float:
    return sdk_settings().checkpoint_after


#: a child that has not started this long after its trigger is queued (behind a concurrency
#: limit, a delay, a missing version): the parent checkpoints at once instead of holding its
#: executor and slot for ``checkpoint_after`` (which is what blocks a limit-1 queue)
CHILD_START_PROBE_SECONDS = 0.5
_NOT_STARTED = frozenset({"QUEUED", "DELAYED", "PENDING_VERSION"})


async def _begin(ctx: Context | None) -> None:
    if ctx is None:
        return
    data = ctx.to_dict()
    journal = {e.seq: e for e in map(JournalEntry.from_wire, data.get("journal") or [])}
    _state.set(
        RunState(
            run_id=data["run"]["id"],
            attempt_number=int(data["attempt"]["number"]),
            instance_id=(data.get("worker") or {}).get("instance_id"),
            journal=journal,
        )
    )


attempt_hooks.on_attempt_start(_begin)


def state() -> RunState:
    """The current run's durable state; only inside a run."""
    current = _state.get()
    if current is None:
        if current_context() is None:
            raise RuntimeError("this works only inside a task run (it waits durably)")
        raise RuntimeError("the run's durable state is not initialised (runtime too old?)")
    return current


def maybe_state() -> RunState | None:
    return _state.get()


def replayed(kind: str, key: str | None) -> tuple[int, JournalEntry | None]:
    """Take the next position; return (seq, the recorded entry if this is a replay)."""
    run = state()
    seq = run.take_seq()
    entry = run.journal.get(seq)
    if entry is not None and (entry.kind != kind or entry.key != key):
        raise NonDeterministicError(
            f"{NON_DETERMINISTIC}: operation {seq} of run {run.run_id} was recorded as "
            f"{entry.kind}({entry.key}) but the replay does {kind}({key}); "
            "code before a wait runs again on resume and must do the same durable operations "
            "in the same order (put side effects in worker.step)"
        )
    return seq, entry


# --- talking to the engine ---------------------------------------------------------------------


async def record(seq: int, kind: str, key: str | None, outcome: object) -> None:
    run = state()
    await transport.json(
        "POST",
        f"/engine/v1/runs/{run.run_id}/journal",
        json={
            "seq": seq,
            "kind": kind,
            "key": key,
            "outcome": outcome,
            "instance_id": run.instance_id,
            "attempt_number": run.attempt_number,
        },
    )


@dataclass
class WaitOutcome:
    """How a waitpoint ended: its output (serialised) and whether it is an error."""

    output: str | None
    output_type: str | None
    is_error: bool
    status: str


def _outcome(waitpoint: Waitpoint) -> WaitOutcome | None:
    if waitpoint.status == "WAITING":
        return None
    return WaitOutcome(output=waitpoint.output, output_type=waitpoint.output_type,
                       is_error=waitpoint.is_error, status=waitpoint.status)


def _wait_attributes(kind: str, seq: int, info: dict[str, Any]) -> dict[str, object]:
    return {"trigger.span.kind": "wait", "trigger.wait.kind": kind, "trigger.journal.seq": seq,
            **{f"trigger.wait.{k}": v for k, v in info.items() if isinstance(v, str | int)}}


async def block(
    seq: int,
    entry: JournalEntry | None,
    kind: str,
    wait_info: dict[str, Any],
    *,
    waitpoint_id: str | None = None,
    until: str | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: str | None = None,
    checkpoint_now: bool = False,
    child_run_id: str | None = None,
) -> WaitOutcome:
    """Wait durably for a waitpoint: replayed, in place, or across a checkpoint.

    With ``child_run_id`` (a wait for one child run) the run checkpoints as soon as that child
    is seen still queued after :data:`CHILD_START_PROBE_SECONDS`."""
    run = state()
    if run.waiting:
        raise ConcurrentWaitError(
            f"{TASK_DID_CONCURRENT_WAIT}: run {run.run_id} is already waiting; waits in one run "
            "cannot overlap (use batch_trigger_and_wait to wait for several runs at once)"
        )
    if entry is not None and entry.waitpoint is not None:
        done = _outcome(entry.waitpoint)
        if done is not None:  # replay: the wait is over
            if run.checkpointed_at(seq):
                # the wait this attempt checkpointed at ends here: its on_wait ran in the
                # process that checkpointed, its on_resume runs now (once per wait)
                with tracing.operation(f"resume {kind}", {
                        **_wait_attributes(kind, seq, wait_info), "trigger.resumed": True}):
                    for hook in run.on_resume:
                        await hook(wait_info)
            return done
        waitpoint_id = entry.waitpoint.id
    # the wait's span (replayed waits have none: their span was recorded when they ran)
    span = tracing.Operation(f"wait {kind}", _wait_attributes(kind, seq, wait_info))
    run.waiting = True
    try:
        for hook in run.on_wait:
            await hook(wait_info)
        if run.pause_clock:
            run.pause_clock()
        if entry is None or waitpoint_id is None:
            body: JsonBody = {
                "seq": seq,
                "kind": kind,
                "instance_id": run.instance_id,
                "attempt_number": run.attempt_number,
            }
            if waitpoint_id is not None:
                body["waitpoint_id"] = waitpoint_id
            else:
                body.update(
                    until=until,
                    idempotency_key=idempotency_key,
                    idempotency_key_ttl=idempotency_key_ttl,
                )
            waitpoint = Waitpoint.from_api(
                await transport.json("POST", f"/engine/v1/runs/{run.run_id}/wait", json=body))
            waitpoint_id = waitpoint.id
            done = _outcome(waitpoint)
        else:
            done = None
        assert waitpoint_id is not None
        deadline = time.monotonic() + (0 if checkpoint_now else checkpoint_after())
        probe_at = (
            time.monotonic() + CHILD_START_PROBE_SECONDS
            if child_run_id is not None and deadline - time.monotonic() > CHILD_START_PROBE_SECONDS
            else None
        )
        while done is None:
            if probe_at is not None and time.monotonic() >= probe_at:
                probe_at = None
                assert child_run_id is not None
                child = await transport.json("GET", f"/api/v3/runs/{child_run_id}")
                if child.get("status") in _NOT_STARTED:
                    deadline = time.monotonic()  # checkpoint now
            remaining = deadline - time.monotonic()
            if probe_at is not None:
                remaining = min(remaining, max(0.0, probe_at - time.monotonic()))
            if deadline - time.monotonic() <= 0:
                try:
                    # this process sends no completion: buffered state (metadata) goes now
                    await attempt_hooks.checkpointing(current_context())
                except Exception:
                    # nothing may be lost: keep waiting in place, try again later
                    deadline = time.monotonic() + max(1.0, checkpoint_after())
                    continue
                checkpoint: JsonBody = {
                    "instance_id": run.instance_id,
                    "attempt_number": run.attempt_number,
                }
                if run.execution_ms is not None:
                    checkpoint["execution_ms"] = run.execution_ms()
                suspended = await transport.json(
                    "POST", f"/engine/v1/runs/{run.run_id}/checkpoint", json=checkpoint)
                if suspended["suspended"]:
                    raise Suspended(waitpoint_id)
                remaining = 0.0  # completed meanwhile: read it below
            polled = await transport.json(
                "GET", f"/engine/v1/waitpoints/{waitpoint_id}/wait",
                params={"timeout_ms": str(int(min(max(remaining, 0), 10) * 1000))},
            )
            done = _outcome(Waitpoint.from_api(polled))
        if run.resume_clock:
            run.resume_clock()
        for hook in run.on_resume:
            await hook(wait_info)
        return done
    finally:
        run.waiting = False
        span.finish(sys.exc_info()[1])


async def sleep_in_process(seconds: float, wait_info: dict[str, Any]) -> None:
    """A short duration wait, slept in the process (no journal entry, no checkpoint). Like any
    wait it runs the ``on_wait`` / ``on_resume`` hooks (once: not again when the code is
    replayed after a checkpoint) and its time does not count towards ``max_duration``."""
    run = _state.get()
    if run is None or run.waiting or run.sleeping:
        await asyncio.sleep(seconds)  # outside a run, or overlapping another wait
        return
    # Replayed after a checkpoint: this wait's hooks ran in the process that first slept it.
    hooks = not run.replaying
    span = tracing.Operation("wait for", {"trigger.span.kind": "wait", "trigger.wait.kind": "for",
                                          "trigger.wait.seconds": seconds}) if hooks else None
    run.sleeping += 1
    try:
        for hook in run.on_wait if hooks else []:
            await hook(wait_info)
        if run.pause_clock:
            run.pause_clock()
        try:
            await asyncio.sleep(seconds)
        finally:
            if run.resume_clock:
                run.resume_clock()
        for hook in run.on_resume if hooks else []:
            await hook(wait_info)
    finally:
        run.sleeping -= 1
        if span is not None:
            span.finish(sys.exc_info()[1])


P = ParamSpec("P")
R = TypeVar("R")


def durable_operation(
    kind: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate a durable operation ``fn(name, ...)`` (step, child trigger): one span named
    ``"<kind> <name>"`` when it runs, none when a resumed run replays it from the journal."""

    def decorate(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            current = maybe_state()
            if current is not None and current.replaying:
                return await fn(*args, **kwargs)
            target = args[0] if args else kwargs.get("task_id", kwargs.get("name", ""))
            if not isinstance(target, str):
                target = "batch"
            with tracing.operation(f"{kind} {target}", {"trigger.span.kind": kind,
                                                         "trigger.target": target}):
                return await fn(*args, **kwargs)

        return wrapper

    return decorate
