"""Realtime for Trigger.dev's SDK: ElectricSQL's shape protocol on ``/realtime/v1/runs/{id}``,
``/realtime/v1/runs?tags=...`` and ``/realtime/v1/batches/{id}`` (docs/api.md, "Realtime").

The SDK's ``subscribeToRun`` / ``subscribeToRunsWithTag`` / ``subscribeToBatch`` first ask for
``?offset=-1`` (the shape's current rows as ``insert`` messages, then ``up-to-date``), then
long-poll ``?live=true&handle=H&offset=O`` for what changed after ``O``. A request carrying
``offset`` is answered here; the same paths without it stay server-sent events for our Python
SDK (routes_realtime).

Every status a run goes through is delivered: the SDK merges the messages of one response per
run and only shows the last, so a response holds at most one change per run, and changes come
from the environment's change log (electric_log) in commit order, each as of its own status.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import orjson
from fastapi import Request
from fastapi.responses import Response

from worker.api import electric_rows
from worker.api.electric_log import ElectricLogs, EnvLog, Session
from worker.api.state import api_state, engine_of
from worker.common.statuses import FINAL_STATUSES
from worker.engine import realtime
from worker.engine.db import Row
from worker.engine.errors import EngineError
from worker.engine.models import parse_duration
from worker.engine.public_tokens import Principal

#: how long a live request waits for a change before answering "still up to date"
LIVE_SECONDS = 20.0
SNAPSHOT_LIMIT = 100



def logs(request: Request) -> ElectricLogs:
    state = api_state(request)
    if state.electric is None:
        state.electric = ElectricLogs(state.engine.realtime)
    return state.electric


class Shape:
    """Which runs a subscription covers: a snapshot query and a test for a changed run."""

    def __init__(
        self,
        key: str,
        snapshot: Callable[[], Awaitable[list[Row]]],
        covers: Callable[[Row], bool],
        quick: Callable[[realtime.RunChange], bool] = lambda change: True,
    ) -> None:
        self.key = key
        self.snapshot = snapshot
        self.covers = covers
        #: cheap pre-filter on the notification, before the row is read
        self.quick = quick


def run_shape(request: Request, who: Principal, run_id: str) -> Shape:
    pool = engine_of(request).pool

    async def snapshot() -> list[Row]:
        row = await realtime.run_row(pool, who.env, run_id)
        return [row] if row else []

    return Shape(
        f"run:{run_id}",
        snapshot,
        covers=lambda row: row["id"] == run_id,
        quick=lambda change: change.run_id == run_id,
    )


def tag_shape(request: Request, who: Principal) -> Shape:
    """``?tags=a,b`` (runs with any of them), ``&tasks=x,y``, ``&createdAt=1h``."""
    query = request.query_params
    tags = [t for t in (query.get("tags") or "").split(",") if t]
    if not tags:
        raise EngineError("pass one or more tags: /realtime/v1/runs?tags=<tag>[,<tag>]")
    who.require("read:runs", *(f"read:tags:{t}" for t in tags))
    tasks = {t for t in (query.get("tasks") or "").split(",") if t}
    since: datetime | None = None
    if created := query.get("createdAt"):
        try:
            since = datetime.now(UTC) - parse_duration(created, "createdAt")
        except ValueError as exc:
            raise EngineError(str(exc)) from None
    pool = engine_of(request).pool

    def covers(row: Row) -> bool:
        return (
            bool(set(row["tags"] or ()) & set(tags))
            and (not tasks or row["task_id"] in tasks)
            and (since is None or row["created_at"] >= since)
        )

    async def snapshot() -> list[Row]:
        rows: dict[str, Row] = {}
        for tag in tags:
            for row in await realtime.runs_with_tag(pool, who.env, tag, SNAPSHOT_LIMIT):
                rows[row["id"]] = row
        return sorted((r for r in rows.values() if covers(r)), key=lambda r: r["created_at"])

    key = f"tags:{','.join(sorted(tags))}|{','.join(sorted(tasks))}|{query.get('createdAt')}"
    return Shape(key, snapshot, covers)


def batch_shape(request: Request, who: Principal, batch_id: str) -> Shape:
    who.require("read:runs", f"read:batch:{batch_id}")
    pool = engine_of(request).pool
    return Shape(
        f"batch:{batch_id}",
        lambda: realtime.batch_runs(pool, who.env, batch_id),
        covers=lambda row: row["batch_id"] == batch_id,
        quick=lambda change: change.batch_id == batch_id,
    )


def _as_of(row: Row, change: realtime.RunChange) -> Row:
    """The row as it was at ``change`` (its status; no output before it was final)."""
    if change.updated_us >= row["updated_us"] or change.status == row["status"]:
        return row
    past = dict(row, status=change.status, updated_us=change.updated_us)
    if change.status not in FINAL_STATUSES:
        past.update(output=None, output_type=None, completed_at=None, error=None)
    return past


def _respond(
    messages: list[dict[str, object]], handle: str, offset: int, *, live: bool, status: int = 200
) -> Response:
    headers = {
        "electric-handle": handle,
        "electric-offset": f"{offset}_0",
        "electric-schema": electric_rows.SCHEMA_HEADER,
        "cache-control": "no-store",
    }
    if live:
        headers["electric-cursor"] = str(offset)
    if messages and messages[-1] is electric_rows.UP_TO_DATE:
        headers["electric-up-to-date"] = ""
    return Response(
        orjson.dumps(messages), status_code=status, media_type="application/json", headers=headers
    )


def _offset(value: str) -> int:
    try:
        return int(value.split("_", 1)[0])
    except ValueError:
        raise EngineError(f"offset {value!r} is not one this server gave") from None


async def serve(request: Request, who: Principal, shape: Shape) -> Response:
    """One request of the shape protocol."""
    query = request.query_params
    electric = logs(request)
    env_log = await electric.log(who.env.id)
    shape_key = hashlib.sha256(f"{who.env.id}/{shape.key}".encode()).hexdigest()[:16]
    live = query.get("live") == "true"
    if query.get("offset", "-1") == "-1":
        return await _snapshot(request, who, shape, electric, env_log, shape_key)
    session = electric.session(query.get("handle"), shape_key)
    offset = _offset(query["offset"])
    if session is None or not env_log.holds(offset):
        fresh = electric.new_session(shape_key)
        return _respond([electric_rows.MUST_REFETCH], fresh.handle, -1, live=False, status=409)
    messages, offset = await _changes(request, who, shape, env_log, session, offset)
    if not messages and live:
        await env_log.wait(offset, LIVE_SECONDS)
        messages, offset = await _changes(request, who, shape, env_log, session, offset)
    return _respond([*messages, electric_rows.UP_TO_DATE], session.handle, offset, live=live)


async def _snapshot(
    request: Request,
    who: Principal,
    shape: Shape,
    electric: ElectricLogs,
    env_log: EnvLog,
    shape_key: str,
) -> Response:
    offset = env_log.seq  # taken before the read: later changes are replayed, not lost
    session = electric.new_session(shape_key)
    messages = []
    for row in await shape.snapshot():
        if who.can_read_run(row):
            session.sent_us[row["id"]] = row["updated_us"]
            messages.append(electric_rows.change_message(row, "insert", f"{offset}_0"))
    return _respond([*messages, electric_rows.UP_TO_DATE], session.handle, offset, live=False)


async def _changes(
    request: Request,
    who: Principal,
    shape: Shape,
    env_log: EnvLog,
    session: Session,
    offset: int,
) -> tuple[list[dict[str, object]], int]:
    """The changes after ``offset`` for this shape, at most one per run; the new offset."""
    pool = engine_of(request).pool
    messages: list[dict[str, object]] = []
    in_response: set[str] = set()
    rows: dict[str, Row | None] = {}
    for entry in env_log.after(offset):
        change = entry.change
        if change.run_id in in_response:
            break  # the next response carries it, so the client sees both statuses
        offset = entry.seq
        if not shape.quick(change) or change.updated_us <= session.sent_us.get(change.run_id, -1):
            continue
        if change.run_id not in rows:
            rows[change.run_id] = await realtime.run_row(pool, who.env, change.run_id)
        row = rows[change.run_id]
        if row is None or not shape.covers(row) or not who.can_read_run(row):
            continue
        operation = "update" if change.run_id in session.sent_us else "insert"
        session.sent_us[change.run_id] = change.updated_us
        in_response.add(change.run_id)
        messages.append(
            electric_rows.change_message(_as_of(row, change), operation, f"{entry.seq}_0")
        )
    return messages, offset
