"""The reads of a retrieved run (``GET /api/v3/runs/{id}``), sent on a connection someone else
is already using: a retrieve's own read-only trip (runs.retrieve), or the completion's
pipeline after its COMMIT, which hands a finished run to a ``waitMs`` retrieve waiting in the
same API process without another round trip (completing.py, realtime.RealtimeHub).

Either way the same statements read the same committed state, and :func:`assemble` builds
the same row from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncCursor

from worker.engine.db import Conn, Row
from worker.engine.queries import Q


@dataclass(frozen=True)
class RunReads:
    """The cursors of one run's reads, to be read once the pipeline has been sent."""

    run: AsyncCursor[Row]
    children: AsyncCursor[Row] | None


async def send(conn: Conn, run_id: str, environment_id: str, *,
               children: bool = False) -> RunReads:
    """Queue the reads of a run on ``conn`` (in a pipeline: nothing waits here)."""
    params = {"id": run_id, "environment_id": environment_id}
    run = await conn.execute(Q.retrieve_run, params)
    kids = await conn.execute(Q.run_children, params) if children else None
    return RunReads(run, kids)


async def assemble(reads: RunReads) -> Row | None:
    """The run as runs.retrieve returns it (None: no such run in that environment)."""
    row = await reads.run.fetchone()
    if row is None:
        return None
    attempts = [_attempt(a) for a in row.pop("run_attempts") or ()]
    depth = row.pop("run_depth")
    if row["parent_run_id"] is not None:  # a run whose parent is gone counts as depth 1
        depth = int(depth) if depth is not None else 1
    out = {**row, "attempt_count": len(attempts), "payload": row["run_payload"],
           "attempts": attempts, "depth": int(depth or 0)}
    if reads.children is not None:
        out["children"] = await reads.children.fetchall()
    return out


def _attempt(item: dict[str, Any]) -> dict[str, Any]:
    """An attempt as retrieve_run's JSON has it, with its times as timestamps again."""
    for key in ("started_at", "completed_at"):
        if item[key] is not None:
            item[key] = datetime.fromisoformat(item[key])
    return item
