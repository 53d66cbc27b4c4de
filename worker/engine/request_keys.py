"""``x-trigger-request-idempotency-key``: a retried trigger request answers what the first one
answered (docs/triggerdev-semantics.md, "Idempotency keys"). The answer is kept as the JSON
the client received, so a retry gets the same bytes whatever changed since."""

from __future__ import annotations

from typing import NotRequired, TypedDict, cast

from psycopg.types.json import Jsonb

from worker.common.limits import check_text
from worker.engine.db import Conn, fetch_one
from worker.engine.errors import Conflict
from worker.engine.keys import Environment
from worker.engine.queries import Q

HEADER = "x-trigger-request-idempotency-key"


class TriggeredRun(TypedDict):
    """The answer to one trigger."""

    id: str
    isCached: bool
    #: the waitpoint the parent waits on (``trigger_and_wait``)
    waitpointId: NotRequired[str]


class BatchEntry(TypedDict):
    """One item of a batch: created (``id``, ``isCached``) or refused (``error``)."""

    taskIdentifier: str
    id: NotRequired[str]
    isCached: NotRequired[bool]
    error: NotRequired[str]


class TriggeredBatch(TypedDict):
    """The answer to a batch trigger: one entry per item, in item order."""

    id: str
    runCount: int
    runs: list[BatchEntry]
    waitpointId: NotRequired[str]


Answer = TriggeredRun | TriggeredBatch
#: what a batch request claims its key with (the batch id is not known before)
NO_ANSWER: dict[str, object] = {}


async def claim(
    conn: Conn, env: Environment, key: str | None, planned: Answer | dict[str, object]
) -> dict[str, object] | None:
    """For a retried request: the answer already given. Otherwise claim the key with
    ``planned`` (what this request will answer unless it changes) and return None."""
    if key is None:
        return None
    check_text(key, HEADER)
    params = {"environment_id": env.id, "request_key": key, "response": Jsonb(planned)}
    if await fetch_one(conn, Q.claim_request_key, params):
        return None
    row = await fetch_one(conn, Q.find_request_key, params)
    return cast("dict[str, object]", row["response"]) if row else None


async def _check_same(
    conn: Conn, key: str, cached: dict[str, object], task_ids: set[str], batch: bool
) -> None:
    """A request key answers again only for the same kind of request on the same tasks:
    reusing it for another task (or a batch for a trigger) is a client bug, not a retry."""
    if batch:
        entries = cast("list[dict[str, object]]", cached.get("runs") or [])
        sent = {str(entry.get("taskIdentifier")) for entry in entries}
        same = "runCount" in cached and sent == task_ids
    else:
        row = None
        if "runCount" not in cached and cached.get("id"):
            row = await fetch_one(conn, Q.run_task_id, {"id": cached["id"]})
        same = row is not None and {row["task_id"]} == task_ids
    if not same:
        raise Conflict(
            f"{HEADER} {key!r} was already used for a different "
            "request (another task or kind); use a new key for a new request"
        )


async def replayed_run(
    conn: Conn, key: str, cached: dict[str, object], task_id: str
) -> TriggeredRun:
    await _check_same(conn, key, cached, {task_id}, batch=False)
    return cast(TriggeredRun, dict(cached))


async def replayed_batch(
    conn: Conn, key: str, cached: dict[str, object], task_ids: set[str]
) -> TriggeredBatch:
    await _check_same(conn, key, cached, task_ids, batch=True)
    return cast(TriggeredBatch, dict(cached))


async def save(
    conn: Conn,
    env: Environment,
    key: str | None,
    planned: Answer | dict[str, object],
    answer: Answer,
) -> None:
    if key is not None and answer != planned:
        await conn.execute(
            Q.save_request_key,
            {"environment_id": env.id, "request_key": key, "response": Jsonb(answer)},
        )
