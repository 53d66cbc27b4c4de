"""Triggering runs: ``trigger`` and ``batch_trigger`` over the transport, above the journal.

Inside a run a trigger is journaled (worker/sdk/durable.py), so a replay after a checkpoint gets
the same child back instead of triggering it again. Every logical trigger carries one request
idempotency key on all its HTTP tries (worker/sdk/transport.py). Wire format: docs/api.md.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, Unpack

from worker.sdk import durable, transport
from worker.sdk.durable import durable_operation
from worker.sdk.transport import JsonBody, path_segment, payload_members
from worker.sdk.trigger_options import (
    BATCH_OPTIONS,
    TriggerOptions,
    collect_items,
    split_item,
    wire_options,
    with_parent,
)

#: the output type of the triggered task (``RunHandle[Output]``), for typed retrieval
O = TypeVar("O")  # noqa: E741


@dataclass(frozen=True)
class RunHandle(Generic[O]):
    """What triggering returns: the new run's id (``run_...``)."""

    id: str
    task_identifier: str
    is_cached: bool = False
    public_access_token: str | None = None


@dataclass(frozen=True)
class BatchHandle(Generic[O]):
    """What batch triggering returns: the batch id and one handle per item, in item order."""

    batch_id: str
    runs: list[RunHandle[O]] = field(default_factory=list)
    is_cached: bool = False

    @property
    def run_count(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class ChildItem:
    """One item of a batch naming its task: the task, its payload and trigger options."""

    task: str
    payload: object = None
    options: Mapping[str, object] = field(default_factory=dict)


def item_body(payload: object, options: JsonBody, task_id: str | None = None) -> JsonBody:
    """One trigger's body (or one batch item): ``{["task",] "payload"[, "payloadType"],
    "options"}``."""
    head: JsonBody = {"task": task_id} if task_id is not None else {}
    return {**head, **payload_members(payload), "options": options}


@durable_operation("trigger")
async def trigger(
    task_id: str, payload: object = None, **options: Unpack[TriggerOptions]
) -> RunHandle[Any]:
    """Trigger one run of ``task_id``; return at once with its handle."""
    wire = with_parent(wire_options(options))
    if durable.maybe_state() is not None:
        seq, entry = durable.replayed("trigger", task_id)
        if entry is not None:
            return RunHandle(id=str(entry.outcome["id"]), task_identifier=task_id, is_cached=True)
        wire["journalSeq"] = seq
        wire["parentAttempt"] = durable.state().attempt_number
    response = await transport.request(
        "POST",
        f"/api/v1/tasks/{path_segment(task_id)}/trigger",
        json=item_body(payload, wire),
        idempotency_key=str(uuid.uuid4()),
    )
    data = response.json()
    return RunHandle(
        id=data["id"],
        task_identifier=task_id,
        is_cached=bool(data.get("isCached", False)),
        public_access_token=response.headers.get("x-trigger-jwt"),
    )


def _split_options(options: TriggerOptions) -> tuple[dict[str, object], dict[str, object]]:
    """The options of the batch itself, and the rest (defaults for each item)."""
    batch = {k: v for k, v in options.items() if k in BATCH_OPTIONS}
    return batch, {k: v for k, v in options.items() if k not in BATCH_OPTIONS}


def batch_body(items: list[JsonBody], batch_opts: Mapping[str, object]) -> JsonBody:
    """``{"items": [...]}`` plus the batch's own ``options`` only when there are some."""
    wire = wire_options(batch_opts)
    return {"items": items, "options": wire} if wire else {"items": items}


async def batch_trigger(
    task_id: str, items: object, **options: Unpack[TriggerOptions]
) -> BatchHandle[Any]:
    """Trigger one run of ``task_id`` per item (payloads or ``{payload, options}`` dicts); items
    may be a list, any iterable or an async iterable (read to the end first).

    ``idempotency_key``/``idempotency_key_ttl`` apply to the batch; any other option is a
    default for every item, which the item's own options override.
    """
    collected = await collect_items(items)
    batch_opts, defaults = _split_options(options)
    bodies = []
    for item in collected:
        payload, item_opts = split_item(item)
        bodies.append(item_body(payload, with_parent(wire_options({**defaults, **item_opts}))))
    data = await transport.json(
        "POST",
        f"/api/v1/tasks/{path_segment(task_id)}/batch",
        json=batch_body(bodies, batch_opts),
        idempotency_key=str(uuid.uuid4()),
    )
    return batch_handle(data, task_id)


async def batch_trigger_tasks(
    items: list[ChildItem], **options: Unpack[TriggerOptions]
) -> BatchHandle[Any]:
    """One run per item, of several tasks (``batch.trigger``)."""
    batch_opts, defaults = _split_options(options)
    bodies = [
        item_body(item.payload, with_parent(wire_options({**defaults, **item.options})), item.task)
        for item in items
    ]
    data = await transport.json(
        "POST",
        "/api/v2/tasks/batch",
        json=batch_body(bodies, batch_opts),
        idempotency_key=str(uuid.uuid4()),
    )
    return batch_handle(data)


def batch_handle(data: dict[str, Any], task_id: str | None = None) -> BatchHandle[Any]:
    runs: list[RunHandle[Any]] = []
    for r in data.get("runs") or []:
        if isinstance(r, dict):
            runs.append(RunHandle(id=r["id"], task_identifier=r.get("taskIdentifier") or task_id
                                  or "", is_cached=bool(r.get("isCached", False))))
        else:
            runs.append(RunHandle(id=str(r), task_identifier=task_id or ""))
    return BatchHandle(
        batch_id=str(data.get("id") or data["batchId"]),
        runs=runs,
        is_cached=bool(data.get("isCached", False)),
    )
