"""The worker protocol's messages (docs/protocol.md), typed, each with one wire form.

The engine (``worker.engine.leases`` / ``completing``), the API (``worker.api.routes_worker``),
the runtime's supervisor and ``worker.testing`` build and read these values; ``to_wire`` gives
the JSON object of docs/protocol.md (unchanged since before these types existed) and
``from_wire`` reads one back. Plain frozen dataclasses with explicit converters: no validation
runs here, so they cost next to nothing on the hot path (the engine sanitises what workers send
in ``worker.engine.completions``; ``tests/protocol/test_protocol_doc.py`` checks the doc's JSON
examples against these types).

Opaque JSON the protocol only carries (a task manifest, retry options, a ``TaskRunError``,
metadata operations, journal entries, log attributes) stays a :data:`Wire` object.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from worker.common.run_context import (
    AttemptInfo,
    EnvironmentInfo,
    MachineInfo,
    ProjectInfo,
    RunContext,
    RunInfo,
    TaskInfo,
    Wire,
    frozen_builder,
    opt_str,
)

__all__ = [
    "AttemptInfo", "Completion", "CompletionResult", "DequeueRequest", "DequeuedRun",
    "EnvironmentInfo", "HeartbeatRequest", "HeartbeatResponse", "LogRecord", "MachineInfo",
    "Outcome", "ProjectInfo", "RegisterRequest", "RegisterResponse", "ReleaseRequest",
    "ReleaseResponse", "RunContext", "RunInfo", "TaskInfo", "Wire",
]


class Outcome(StrEnum):
    """What the engine did with one completion (``/complete`` results)."""

    RUN_FINISHED = "RUN_FINISHED"
    #: requeued for a later attempt (on any worker)
    RETRY_QUEUED = "RETRY_QUEUED"
    #: the lease was kept: the next attempt is the result's ``next`` run, for this worker
    RETRY_IMMEDIATELY = "RETRY_IMMEDIATELY"
    #: the fence failed (the run is no longer ours): nothing changed
    LEASE_LOST = "LEASE_LOST"
    #: the item names no run attempt the engine could apply it to
    REFUSED = "REFUSED"


# --- register ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RegisterRequest:
    instance_id: str
    content_hash: str
    tasks: list[Wire]
    metadata: Wire = field(default_factory=dict)

    def to_wire(self) -> Wire:
        return {"instance_id": self.instance_id, "content_hash": self.content_hash,
                "tasks": self.tasks, "metadata": self.metadata}

    @classmethod
    def from_wire(cls, data: Wire) -> RegisterRequest:
        return cls(str(data["instance_id"]), str(data["content_hash"]), list(data["tasks"]),
                   dict(data.get("metadata") or {}))


@dataclass(frozen=True, slots=True)
class RegisterResponse:
    version_id: str
    version: str
    environment: EnvironmentInfo
    project: ProjectInfo
    lease_seconds: float
    heartbeat_seconds: float

    def to_wire(self) -> Wire:
        return {"version_id": self.version_id, "version": self.version,
                "environment": self.environment.to_wire(), "project": self.project.to_wire(),
                "lease_seconds": self.lease_seconds, "heartbeat_seconds": self.heartbeat_seconds}

    @classmethod
    def from_wire(cls, data: Wire) -> RegisterResponse:
        return cls(str(data["version_id"]), str(data["version"]),
                   EnvironmentInfo.from_wire(data["environment"]),
                   ProjectInfo.from_wire(data["project"]),
                   float(data.get("lease_seconds") or 30),
                   float(data.get("heartbeat_seconds") or 5))


# --- dequeue -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DequeueRequest:
    instance_id: str
    versions: list[str]
    max_runs: int = 1
    wait_ms: int = 0
    #: the reply brings each batch as it is leased (docs/protocol.md, "Streamed dequeue")
    stream: bool = False

    def to_wire(self) -> Wire:
        return {"instance_id": self.instance_id, "versions": self.versions,
                "max_runs": self.max_runs, "wait_ms": self.wait_ms, "stream": self.stream}

    @classmethod
    def from_wire(cls, data: Wire) -> DequeueRequest:
        return cls(str(data["instance_id"]), [str(v) for v in data["versions"]],
                   int(data.get("max_runs") or 1), int(data.get("wait_ms") or 0),
                   bool(data.get("stream")))


@dataclass(frozen=True, slots=True)
class DequeuedRun:
    """One leased run (``/dequeue`` ``runs[]``, and a ``RETRY_IMMEDIATELY`` result's ``next``)."""

    run_id: str
    attempt_number: int
    task_id: str
    version_id: str
    version: str
    payload: str | None
    payload_type: str
    max_attempts: int | None
    #: the retry options locked at the first lease
    retry: Wire | None
    max_duration: float | None
    machine: str
    ctx: RunContext
    #: no retry follows this attempt (attempt_number reached max_attempts)
    is_final_attempt: bool = False
    lease_expires_at: str | None = None
    #: replaying ``journal`` after a checkpoint
    resumed: bool = False
    #: execution time used before the checkpoint (counts towards max_duration)
    execution_ms: int = 0
    #: the current attempt's journal (empty for a new attempt)
    journal: list[Wire] = field(default_factory=list)
    #: the run's span (W3C traceparent): the parent of the attempt's span
    traceparent: str | None = None
    #: the environment's variables, set in the executor's os.environ for this run only
    env_vars: dict[str, str] | None = None
    #: an in-place retry (``RETRY_IMMEDIATELY``) starts after this delay
    delay_ms: int | None = None
    #: the object :meth:`from_wire` read (the value is frozen, so it stays true): the supervisor
    #: hands a leased run on to its executor as it came, without building it again
    _wire: Wire | None = field(default=None, init=False, repr=False, compare=False)

    def with_journal(self, journal: list[Wire]) -> DequeuedRun:
        return replace(self, journal=journal, ctx=replace(self.ctx, journal=journal))

    def without_metadata(self) -> DequeuedRun:
        return replace(self, ctx=replace(self.ctx, run=replace(self.ctx.run, metadata=None)))

    def to_wire(self) -> Wire:
        if self._wire is not None:
            return self._wire
        wire: Wire = {
            "run_id": self.run_id, "attempt_number": self.attempt_number,
            "task_id": self.task_id, "version_id": self.version_id, "version": self.version,
            "payload": self.payload, "payload_type": self.payload_type,
            "max_attempts": self.max_attempts, "retry": self.retry,
            "max_duration": self.max_duration, "machine": self.machine,
            "lease_expires_at": self.lease_expires_at,
            "is_final_attempt": self.is_final_attempt, "resumed": self.resumed,
            "execution_ms": self.execution_ms, "journal": self.journal,
            "traceparent": self.traceparent, "ctx": self.ctx.to_wire(),
        }
        if self.env_vars:
            wire["env_vars"] = self.env_vars
        if self.delay_ms is not None:
            wire["delay_ms"] = self.delay_ms
        return wire

    @classmethod
    def from_wire(cls, data: Wire) -> DequeuedRun:
        # every field, in order (worker.common.run_context.frozen_builder), the last _wire
        return _build_dequeued_run(
            str(data["run_id"]), int(data["attempt_number"]), str(data["task_id"]),
            str(data["version_id"]), str(data.get("version") or ""), data.get("payload"),
            str(data.get("payload_type") or "application/json"), data.get("max_attempts"),
            data.get("retry"), data.get("max_duration"), str(data.get("machine") or ""),
            RunContext.from_wire(data["ctx"]), bool(data.get("is_final_attempt")),
            data.get("lease_expires_at"), bool(data.get("resumed")),
            int(data.get("execution_ms") or 0), list(data.get("journal") or []),
            data.get("traceparent"), data.get("env_vars"), data.get("delay_ms"), data)


_build_dequeued_run = frozen_builder(DequeuedRun)


# --- heartbeat / release -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HeartbeatRequest:
    instance_id: str
    run_ids: list[str]
    #: the worker is shutting down: it serves no version from now on
    stopping: bool = False

    def to_wire(self) -> Wire:
        wire: Wire = {"instance_id": self.instance_id, "run_ids": self.run_ids}
        if self.stopping:
            wire["stopping"] = True
        return wire

    @classmethod
    def from_wire(cls, data: Wire) -> HeartbeatRequest:
        return cls(str(data["instance_id"]), [str(r) for r in data.get("run_ids") or []],
                   bool(data.get("stopping")))


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    #: runs this instance no longer holds: stop them, never report them
    lost: list[str]
    #: those of ``lost`` that were canceled (the task gets ``on_cancel``)
    canceled: list[str] = field(default_factory=list)

    def to_wire(self) -> Wire:
        return {"lost": self.lost, "canceled": self.canceled}

    @classmethod
    def from_wire(cls, data: Wire) -> HeartbeatResponse:
        return cls([str(r) for r in data.get("lost") or []],
                   [str(r) for r in data.get("canceled") or []])


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    instance_id: str
    run_ids: list[str]

    def to_wire(self) -> Wire:
        return {"instance_id": self.instance_id, "run_ids": self.run_ids}

    @classmethod
    def from_wire(cls, data: Wire) -> ReleaseRequest:
        return cls(str(data["instance_id"]), [str(r) for r in data.get("run_ids") or []])


@dataclass(frozen=True, slots=True)
class ReleaseResponse:
    released: list[str]

    def to_wire(self) -> Wire:
        return {"released": self.released}

    @classmethod
    def from_wire(cls, data: Wire) -> ReleaseResponse:
        return cls([str(r) for r in data.get("released") or []])


# --- complete ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Completion:
    """One attempt's result (``/complete`` ``completions[]``), as the engine applies it."""

    run_id: str
    attempt_number: int
    ok: bool
    output: str | None = None
    output_type: str | None = None
    #: the ``TaskRunError`` of a failure
    error: Wire | None = None
    #: the delay the worker computed (``catch_error``, the retry formula); None: no retry asked
    retry_delay_ms: int | None = None
    skipped_retrying: bool = False
    #: the worker can run a short retry itself (``RETRY_IMMEDIATELY``)
    retry_in_place: bool = False
    #: an out-of-memory retry's bigger machine
    retry_machine: str | None = None
    duration_ms: int | None = None
    #: buffered metadata operations: {"operations", "parentOperations", "rootOperations"}
    metadata: Wire | None = None

    def to_wire(self) -> Wire:
        wire: Wire = {"run_id": self.run_id, "attempt_number": self.attempt_number,
                      "ok": self.ok}
        if self.ok:
            wire["output"] = self.output
            wire["output_type"] = self.output_type
        else:
            wire["error"] = self.error
            wire["retry"] = (None if self.retry_delay_ms is None
                             else {"delay_ms": self.retry_delay_ms})
            wire["skipped_retrying"] = self.skipped_retrying
            if self.retry_in_place:
                wire["retry_in_place"] = True
            if self.retry_machine:
                wire["retry_machine"] = self.retry_machine
        if self.duration_ms is not None:
            wire["duration_ms"] = self.duration_ms
        if self.metadata:
            wire["metadata"] = self.metadata
        return wire

    @classmethod
    def from_wire(cls, data: Wire) -> Completion:
        """Trusting read (the engine's sanitising read is worker.engine.completions)."""
        retry = data.get("retry")
        return cls(
            run_id=str(data["run_id"]), attempt_number=int(data["attempt_number"]),
            ok=data.get("ok") is True, output=data.get("output"),
            output_type=data.get("output_type"), error=data.get("error"),
            retry_delay_ms=int(retry.get("delay_ms") or 0) if isinstance(retry, dict) else None,
            skipped_retrying=data.get("skipped_retrying") is True,
            retry_in_place=data.get("retry_in_place") is True,
            retry_machine=data.get("retry_machine"), duration_ms=data.get("duration_ms"),
            metadata=data.get("metadata") or None,
        )


@dataclass(frozen=True, slots=True)
class CompletionResult:
    """The engine's answer to one completion (``/complete`` ``results[]``)."""

    run_id: str | None
    outcome: Outcome
    #: the run's API status after it (absent when the lease was lost or the item refused)
    status: str | None = None
    #: why a ``REFUSED`` item was refused
    error: str | None = None
    #: ``RETRY_IMMEDIATELY``: the next attempt, leased to the same worker
    next: DequeuedRun | None = None

    def to_wire(self) -> Wire:
        wire: Wire = {"run_id": self.run_id, "outcome": self.outcome.value}
        if self.status is not None:
            wire["status"] = self.status
        if self.error is not None:
            wire["error"] = self.error
        if self.next is not None:
            wire["next"] = self.next.to_wire()
        return wire

    @classmethod
    def from_wire(cls, data: Wire) -> CompletionResult:
        following = data.get("next")
        return cls(opt_str(data.get("run_id")), Outcome(data["outcome"]), data.get("status"),
                   data.get("error"),
                   DequeuedRun.from_wire(following) if following else None)


# --- logs ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log line of a run (``/logs`` ``logs[]``)."""

    run_id: str
    attempt_number: int
    level: str
    message: str
    attributes: Wire | None
    time: str
    #: the span current when the line was written (16 lowercase hex digits)
    span_id: str | None = None

    def to_wire(self) -> Wire:
        return {"run_id": self.run_id, "attempt_number": self.attempt_number,
                "level": self.level, "message": self.message, "attributes": self.attributes,
                "time": self.time, "span_id": self.span_id}

    @classmethod
    def from_wire(cls, data: Wire) -> LogRecord:
        return cls(str(data["run_id"]), int(data.get("attempt_number") or 0),
                   str(data.get("level") or "info"), str(data.get("message") or ""),
                   data.get("attributes"), str(data.get("time") or ""), data.get("span_id"))
