"""Reading a run's trace back: the span tree, its flat events, one span, the run's logs.

Shapes are documented in docs/api.md ("Traces"); the tree follows Trigger.dev's
``GET /api/v1/runs/{runId}/trace`` (``{"trace": {"traceId", "rootSpan": {"id", "parentId",
"message", "data": {...}, "children": [...]}}}``). The run's own span (and that of each child
run in the tree) is made from its ``runs`` row: it lasts from trigger to final status and is
"partial" while the run is not finished. Everything under it comes from ``run_spans``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from worker.common import trace_context
from worker.common.statuses import FINAL_STATUSES
from worker.engine.db import Conn, Pool, Row, fetch_all, fetch_one
from worker.engine.errors import NotFound
from worker.engine.keys import Environment
from worker.engine.queries import Q

#: spans a trace view returns at most (the rest are left out; ``truncated`` says so)
MAX_SPANS = 10_000
MAX_LOGS = 5_000
LEVEL_RANK = {"debug": 10, "log": 20, "info": 20, "warn": 30, "error": 40}
_ERROR_STATUSES = frozenset({"COMPLETED_WITH_ERRORS", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT",
                             "EXPIRED"})
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _ms(start: datetime, end: datetime) -> float:
    return round((end - start).total_seconds() * 1000, 3)


def run_node(row: Row) -> Row:
    """The synthesised span of a run (trigger → final status)."""
    trace = trace_context.of_row(row)
    final = row["status"] in FINAL_STATUSES
    end = row["completed_at"] or (row["updated_at"] if final else None) or datetime.now(UTC)
    error = row.get("error") if row["status"] in _ERROR_STATUSES else None
    data = {
        "runId": row["id"], "taskSlug": row["task_id"], "events": [],
        "startTime": _iso(row["created_at"]), "endTime": _iso(end),
        "duration": _ms(row["created_at"], end), "durationMs": _ms(row["created_at"], end),
        "isError": row["status"] in _ERROR_STATUSES, "isPartial": not final,
        "isCancelled": row["status"] == "CANCELED", "level": "TRACE",
        "environmentType": row.get("environment_type") or "", "queueName": row["queue"],
        "machinePreset": row.get("machine"), "workerVersion": row.get("version_name"),
        "kind": "run", "status": "ERROR" if row["status"] in _ERROR_STATUSES else (
            "OK" if final else "UNSET"),
        "runStatus": row["status"], "properties": {"ctx.run.id": row["id"],
                                                   "ctx.task.id": row["task_id"]},
        "error": error, "logs": [],
    }
    return {"id": trace.span_id, "parentId": trace.parent_span_id, "traceId": trace.trace_id,
            "runId": row["id"], "message": row["task_id"], "data": data, "children": []}


def span_node(row: Row) -> Row:
    attributes = row["attributes"] or {}
    duration = _ms(row["start_time"], row["end_time"])
    data = {
        "runId": row["run_id"], "taskSlug": attributes.get("ctx.task.id"),
        "events": row["events"] or [], "startTime": _iso(row["start_time"]),
        "endTime": _iso(row["end_time"]), "duration": duration, "durationMs": duration,
        "isError": row["status_code"] == 2, "isPartial": False, "isCancelled": False,
        "level": "TRACE", "kind": attributes.get("trigger.span.kind") or "span",
        "status": _STATUS.get(row["status_code"], "UNSET"),
        "statusMessage": row["status_message"], "properties": attributes, "logs": [],
    }
    return {"id": row["span_id"], "parentId": row["parent_span_id"], "traceId": row["trace_id"],
            "runId": row["run_id"], "message": row["name"], "data": data, "children": []}


def log_entry(row: Row) -> Row:
    return {"id": str(row["id"]), "attemptNumber": row["attempt_number"], "level": row["level"],
            "message": row["message"], "attributes": row["attributes"] or {},
            "time": _iso(row["logged_at"]), "spanId": row["span_id"]}


async def _run_row(conn: Conn, env: Environment, run_id: str) -> Row:
    row = await fetch_one(conn, Q.trace_run, {"run_id": run_id, "environment_id": env.id})
    if row is None:
        raise NotFound(f"run {run_id!r} not found in this environment")
    return dict(row)


async def trace_tree(pool: Pool, env: Environment, run_id: str) -> dict[str, Any]:
    """``{"trace": {"traceId", "rootSpan", "spanCount", "truncated"}}`` of a run and the runs
    it triggered (below it in the same trace)."""
    params = {"run_id": run_id, "environment_id": env.id, "limit": MAX_SPANS + 1}
    async with pool.connection() as conn:
        run = await _run_row(conn, env, run_id)
        spans = await fetch_all(conn, Q.spans_of_runs, params)
        children = await fetch_all(conn, Q.child_runs_in_trace, params)
        logs = await fetch_all(
            conn,
            Q.run_logs_by_span,
            {"run_ids": [run_id, *(c["id"] for c in children)], "limit": MAX_LOGS},
        )
    truncated = len(spans) > MAX_SPANS
    root = run_node(run)
    nodes: dict[str, dict[str, Any]] = {root["id"]: root}
    ordered = [span_node(s) for s in spans[:MAX_SPANS]] + [run_node(dict(c)) for c in children]
    for node in ordered:
        nodes.setdefault(node["id"], node)
    run_spans = {root["runId"]: root, **{n["runId"]: n for n in ordered
                                          if n["data"]["kind"] == "run"}}
    for node in ordered:
        if nodes.get(node["id"]) is not node:
            continue
        parent = nodes.get(node["parentId"] or "")
        if parent is None or parent is node:
            # its parent span is not stored (not exported yet, or lost): under its run's span
            parent = run_spans.get(node["runId"], root) if node["data"]["kind"] != "run" else root
            if parent is node:
                continue
        parent["children"].append(node)
    for line in logs:
        owner = nodes.get(line["span_id"] or "") or run_spans.get(line.get("run_id", ""), root)
        owner["data"]["logs"].append(log_entry(line))
    _sort(root)
    return {"trace": {"traceId": root["traceId"], "rootSpan": root,
                      "spanCount": len(nodes), "truncated": truncated}}


def _sort(node: dict[str, Any]) -> None:
    stack = [node]
    while stack:
        current = stack.pop()
        current["children"].sort(key=lambda n: n["data"]["startTime"] or "")
        stack.extend(current["children"])


def flatten(tree: dict[str, Any]) -> list[dict[str, Any]]:
    """The tree's spans in order (depth first), each without its children."""
    out: list[dict[str, Any]] = []
    stack = [(tree["trace"]["rootSpan"], 0)]
    while stack:
        node, depth = stack.pop()
        out.append({**{k: v for k, v in node.items() if k != "children"}, "depth": depth})
        stack.extend((c, depth + 1) for c in reversed(node["children"]))
    return out


async def one_span(pool: Pool, env: Environment, run_id: str, span_id: str) -> dict[str, Any]:
    async with pool.connection() as conn:
        run = await _run_row(conn, env, run_id)
        if trace_context.of_row(run).span_id == span_id:
            node = run_node(run)
        else:
            row = await fetch_one(
                conn,
                Q.span_of_run,
                {"run_id": run_id, "span_id": span_id, "environment_id": env.id},
            )
            if row is None:
                raise NotFound(f"span {span_id!r} of run {run_id!r} not found")
            node = span_node(row)
        logs = await fetch_all(conn, Q.run_logs_by_span, {"run_ids": [run_id], "limit": MAX_LOGS})
    node.pop("children")
    node["data"]["logs"] = [log_entry(r) for r in logs if r["span_id"] == span_id]
    return node


async def log_page(pool: Pool, env: Environment, run_id: str, *, after: int, limit: int,
                   level: str | None) -> dict[str, Any]:
    """``{"data": [...], "pagination": {"next": cursor | None}}``; ``level``: the lowest level
    returned (``warn`` gives warn and error)."""
    levels = None
    if level is not None:
        rank = LEVEL_RANK[level]
        levels = [name for name, r in LEVEL_RANK.items() if r >= rank]
    async with pool.connection() as conn:
        await _run_row(conn, env, run_id)
        rows = await fetch_all(
            conn,
            Q.run_log_page,
            {"run_id": run_id, "after": after, "limit": limit + 1, "levels": levels},
        )
    more = len(rows) > limit
    rows = rows[:limit]
    return {"data": [log_entry(r) for r in rows],
            "pagination": {"next": str(rows[-1]["id"]) if more and rows else None}}
