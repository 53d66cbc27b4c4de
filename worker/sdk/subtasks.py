"""Triggering from inside a run, durably: ``trigger_and_wait``, ``batch_trigger_and_wait``.

Both journal the trigger in the parent's attempt (a replay after a checkpoint does not trigger
again; a retry does, unless an idempotency key says otherwise) and wait on the child's (or
batch's) waitpoint, in place or across a checkpoint.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Unpack

from worker.sdk import durable, transport
from worker.sdk.durable import durable_operation
from worker.sdk.journal import JournalEntry, Waitpoint
from worker.sdk.transport import path_segment
from worker.sdk.trigger_options import TriggerOptions, split_item, wire_options, with_parent
from worker.sdk.triggering import ChildItem, item_body
from worker.sdk.wait import decode_output


class SubtaskUnwrapError(Exception):
    """``unwrap()`` of a child run that did not succeed."""

    def __init__(self, task_id: str, run_id: str, error: object) -> None:
        message = error.get("message") if isinstance(error, dict) else None
        super().__init__(f"child run {run_id} of {task_id!r} failed: {message or error}")
        self.task_id, self.run_id, self.error = task_id, run_id, error


T = TypeVar("T")


@dataclass
class TaskRunResult(Generic[T]):
    """The result of a child run: ``ok`` with ``output``, or not ``ok`` with ``error``.
    ``TaskRunResult[Output]`` when the task is a ``Task[Payload, Output]``."""

    ok: bool
    id: str
    task_identifier: str
    output: T = None  # type: ignore[assignment]  # None when not ok
    error: Any = None

    def unwrap(self) -> T:
        if not self.ok:
            raise SubtaskUnwrapError(self.task_identifier, self.id, self.error)
        return self.output


@dataclass
class BatchResult(Generic[T]):
    """The children's results in item order: ``for r in result``, ``result[0]``, ``len``,
    ``result.runs``; ``result.unwrap()`` is every output (raising on the first failure)."""

    id: str
    runs: list[TaskRunResult[T]] = field(default_factory=list)

    def __iter__(self) -> Iterator[TaskRunResult[T]]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def __getitem__(self, index: int) -> TaskRunResult[T]:
        return self.runs[index]

    def unwrap(self) -> list[T]:
        return [r.unwrap() for r in self.runs]


def _wait_entry(seq: int, kind: str, key: str, waitpoint_id: str) -> JournalEntry:
    """The entry this attempt just recorded (the engine journals the trigger itself)."""
    return JournalEntry(seq=seq, kind=kind, key=key, outcome=None,
                        waitpoint=Waitpoint(id=waitpoint_id, status="WAITING"))


@durable_operation("trigger_and_wait")
async def trigger_and_wait(
    task_id: str, payload: object = None, **options: Unpack[TriggerOptions]
) -> TaskRunResult[Any]:
    seq, entry = durable.replayed("trigger_and_wait", task_id)
    if entry is None:
        wire = with_parent(wire_options(options))
        wire.update(
            resumeParentOnCompletion=True,
            journalSeq=seq,
            parentAttempt=durable.state().attempt_number,
        )
        data = await transport.json(
            "POST",
            f"/api/v1/tasks/{path_segment(task_id)}/trigger",
            json=item_body(payload, wire),
            idempotency_key=str(uuid.uuid4()),
        )
        run_id, waitpoint_id = str(data["id"]), str(data["waitpointId"])
        entry = _wait_entry(seq, "trigger_and_wait", task_id, waitpoint_id)
    else:
        run_id, waitpoint_id = entry.outcome["id"], entry.outcome["waitpointId"]
    done = await durable.block(
        seq,
        entry,
        "trigger_and_wait",
        {"type": "task", "runId": run_id},
        waitpoint_id=waitpoint_id,
        child_run_id=run_id,
    )
    value = decode_output(done.output, done.output_type)
    if done.is_error:
        return TaskRunResult(ok=False, id=run_id, task_identifier=task_id, error=value)
    return TaskRunResult(ok=True, id=run_id, task_identifier=task_id, output=value)


def child_items(task_id: str, items: Sequence[object]) -> list[ChildItem]:
    """One task's batch items (payloads, or ``{"payload", "options"}``) as children."""
    return [ChildItem(task_id, *split_item(item)) for item in items]


@durable_operation("batch_trigger_and_wait")
async def batch_trigger_and_wait(items: list[ChildItem]) -> BatchResult[Any]:
    """One child per item, waited for; results in item order."""
    key = ",".join(sorted({item.task for item in items}))
    seq, entry = durable.replayed("batch_trigger_and_wait", key)
    if entry is None:
        bodies = [
            item_body(item.payload, with_parent(wire_options(item.options)), item.task)
            for item in items
        ]
        run = durable.state()
        options = {
            "parentRunId": run.run_id,
            "resumeParentOnCompletion": True,
            "journalSeq": seq,
            "parentAttempt": run.attempt_number,
        }
        data = await transport.json(
            "POST", "/api/v2/tasks/batch", json={"items": bodies, "options": options},
            idempotency_key=str(uuid.uuid4()),
        )
        batch_id, waitpoint_id = str(data["id"]), str(data["waitpointId"])
        entry = _wait_entry(seq, "batch_trigger_and_wait", key, waitpoint_id)
    else:
        batch_id, waitpoint_id = entry.outcome["id"], entry.outcome["waitpointId"]
    done = await durable.block(
        seq,
        entry,
        "batch_trigger_and_wait",
        {"type": "batch", "batchId": batch_id, "runCount": len(items)},
        waitpoint_id=waitpoint_id,
    )
    results = []
    for row in decode_output(done.output, done.output_type) or []:
        if row["ok"]:
            output = decode_output(row.get("output"), row.get("outputType"))
            results.append(TaskRunResult(True, row["id"], row["taskIdentifier"], output=output))
        else:
            results.append(
                TaskRunResult(False, row["id"], row["taskIdentifier"], error=row["error"])
            )
    return BatchResult(id=batch_id, runs=results)
