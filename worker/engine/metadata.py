"""Run metadata: a JSON object per run, changed by operations (docs/triggerdev-semantics.md,
"Metadata").

Operations (wire form, Trigger.dev's ``RunMetadataChangeOperation``):

``{"type": "set", "key": k, "value": v}``, ``{"type": "delete", "key": k}``,
``{"type": "append", "key": k, "value": v}`` (to an array; a missing key starts one),
``{"type": "remove", "key": k, "value": v}`` (every equal element of the array),
``{"type": "increment", "key": k, "value": n}`` (decrement is a negative increment),
``{"type": "update", "value": {...}}`` (replace the whole object).

A key starting with ``$.`` is a path into nested objects (``$.progress.percent``); any other
key is a top-level key as written. Operations are applied under the run's row lock, so
increments from several runs (children bumping their parent's counter) never lose updates.
The result must fit in 256 KiB of JSON, else the whole request is refused with 413.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from worker.common import metadata_ops
from worker.common.limits import LimitError, check_metadata
from worker.engine.db import Conn, Pool, Row, fetch_one
from worker.engine.errors import EngineError, NotFound, PayloadTooLarge
from worker.engine.keys import Environment
from worker.engine.queries import Q

log = logging.getLogger(__name__)
MAX_METADATA_BYTES = metadata_ops.MAX_METADATA_BYTES


def apply_operations(metadata: dict[str, Any] | None, operations: list[Any]) -> dict[str, Any]:
    try:
        return metadata_ops.apply_operations(metadata, operations)
    except metadata_ops.MetadataOperationError as exc:
        raise EngineError(str(exc)) from None
    except (TypeError, ValueError) as exc:  # orjson: a value beyond what JSON can hold
        raise EngineError(f"metadata cannot be stored as JSON: {exc}") from None


def check_size(metadata: dict[str, Any], run_id: str) -> None:
    """The stored-JSON rule and the 256 KiB limit (worker.common.limits), for the result."""
    try:
        check_metadata(metadata, f"metadata of run {run_id}")
    except LimitError as exc:
        if exc.status == 413:
            raise PayloadTooLarge(exc.message) from None
        raise EngineError(exc.message) from None


async def _apply(conn: Conn, env: Environment, run_id: str, operations: list[Any]) -> Any:
    row = await fetch_one(conn, Q.lock_run_metadata, {"id": run_id, "environment_id": env.id})
    if row is None:
        raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
    if not operations:
        return row["metadata"]
    updated = apply_operations(row["metadata"], operations)
    check_size(updated, run_id)
    await conn.execute(Q.write_run_metadata, {"id": run_id, "metadata": Jsonb(updated)})
    return updated


async def _ancestors(conn: Conn, run_id: str) -> tuple[str, str]:
    """(parent id, root id) of a run; a run without a parent is its own parent and root."""
    row = await fetch_one(conn, Q.run_parent, {"id": run_id})
    parent = (row and row["parent_run_id"]) or run_id
    root = (row and row["root_run_id"]) or None
    if root is None:  # walk up (root_run_id may not be recorded)
        root, seen = parent, {run_id}
        while root not in seen:
            seen.add(root)
            up = await fetch_one(conn, Q.run_parent, {"id": root})
            if not up or not up["parent_run_id"]:
                break
            root = up["parent_run_id"]
    return parent, root


def _ops(body: dict[str, Any], name: str) -> list[Any]:
    ops = body.get(name) or []
    if not isinstance(ops, list):
        raise EngineError(f"{name} must be a list of operations")
    return ops


async def apply_in(conn: Conn, env: Environment, run_id: str, body: dict[str, Any]) -> Any:
    """Apply a ``{metadata?, operations?, parentOperations?, rootOperations?}`` body inside the
    caller's transaction; return the run's new metadata."""
    operations = _ops(body, "operations")
    if body.get("metadata") is not None:
        if not isinstance(body["metadata"], dict):
            raise EngineError("metadata must be a JSON object")
        operations = [{"type": "update", "value": body["metadata"]}, *operations]
    parent_ops = _ops(body, "parentOperations")
    root_ops = _ops(body, "rootOperations")
    parent, root = await _ancestors(conn, run_id) if parent_ops or root_ops else (run_id, run_id)
    # Lock in a fixed order (root, parent, self) so two runs of one tree cannot deadlock.
    if root_ops and root != run_id:
        await _apply(conn, env, root, root_ops)
    if parent_ops and parent != run_id:
        await _apply(conn, env, parent, parent_ops)
    own = list(operations)
    if root_ops and root == run_id:
        own += root_ops
    if parent_ops and parent == run_id:
        own += parent_ops
    return await _apply(conn, env, run_id, own)


async def update(pool: Pool, env: Environment, run_id: str, body: dict[str, Any]) -> Any:
    async with pool.connection() as conn, conn.transaction():
        return await apply_in(conn, env, run_id, body)


async def retrieve(pool: Pool, env: Environment, run_id: str) -> Row:
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.get_run_metadata, {"id": run_id, "environment_id": env.id})
    if row is None:
        raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
    return dict(row)


async def apply_completion(conn: Conn, env: Environment, run_id: Any, body: Any) -> None:
    """The final flush that rides on an attempt completion (inside its transaction).

    A bad or oversized final flush must not lose the attempt's result: it is dropped (in a
    savepoint) and logged, and the completion is recorded as usual.
    """
    if not isinstance(body, dict):
        return
    try:
        async with conn.transaction():
            await apply_in(conn, env, str(run_id), body)
    except EngineError as exc:
        log.warning(
            "run %s: metadata sent with the completion was dropped: %s", run_id, exc.message
        )
    except psycopg.Error as exc:  # the savepoint is rolled back; the result is still recorded
        log.warning("run %s: metadata sent with the completion was dropped: %s", run_id, exc)
