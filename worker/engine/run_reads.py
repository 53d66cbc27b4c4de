"""The read of a retrieved run (``GET /api/v3/runs/{id}``): a retrieve's own statement
(runs.retrieve), or one more statement in the completion's pipeline after its COMMIT, which
hands a finished run to a ``waitMs`` retrieve waiting in the same API process without another
round trip (completing.py, realtime.RealtimeHub). A lone plain success reads it in its own
statement instead (leases.sql ``complete_success_read``, the same columns).

Each way reads the same state, and :func:`assemble` builds the same row from it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncCursor

from worker.engine.db import Conn, Row
from worker.engine.queries import Q


async def send(conn: Conn, run_id: str, environment_id: str) -> AsyncCursor[Row]:
    """Queue the run's read on ``conn`` (in a pipeline: nothing waits here)."""
    return await conn.execute(Q.retrieve_run, {"id": run_id, "environment_id": environment_id})


def assemble(row: Row | None, *, children: bool = False) -> Row | None:
    """The run as runs.retrieve returns it, from its ``retrieve_run`` row (None: no such run
    in that environment). With ``children``, a run that triggered none has ``"children": []``;
    one that did has no ``"children"`` yet: the reader reads them (related_runs.py), one
    statement that only parents cost."""
    if row is None:
        return None
    attempts = [_attempt(a) for a in row.pop("run_attempts") or ()]
    depth = row.pop("run_depth")
    if row["parent_run_id"] is not None:  # a run whose parent is gone counts as depth 1
        depth = int(depth) if depth is not None else 1
    out = {**row, "attempt_count": len(attempts), "payload": row["run_payload"],
           "attempts": attempts, "depth": int(depth or 0)}
    if not out.pop("run_has_children") and children:
        out["children"] = []
    return out


def _attempt(item: dict[str, Any]) -> dict[str, Any]:
    """An attempt as retrieve_run's JSON has it, with its times as timestamps again."""
    for key in ("started_at", "completed_at"):
        if item[key] is not None:
            item[key] = datetime.fromisoformat(item[key])
    return item
