"""``relatedRuns`` of a retrieved run (Trigger.dev's ``RelatedRunDetails``): its root, its
parent and the runs it triggered, each with the common run fields."""

from __future__ import annotations

from worker.api.presenters import present_run
from worker.engine.db import Pool, Row, fetch_all, fetch_one
from worker.engine.keys import Environment
from worker.engine.queries import Q


def _detail(row: Row, depth: int) -> dict[str, object]:
    return {**present_run(row, full=False), "depth": depth}


async def related_runs(pool: Pool, env: Environment, run: Row) -> dict[str, object]:
    """``run`` as ``runs.retrieve(..., children=True)`` read it: its children come with it, so
    a root run (the common case) needs no further query."""
    related: dict[str, object] = {}
    depth = int(run.get("depth") or 0)
    children = run.get("children")
    lookups = [(key, run_id, at) for key, run_id, at in (
        ("parent", run["parent_run_id"], depth - 1),
        ("root", run["root_run_id"], 0),
    ) if run_id]
    if lookups or children is None:
        async with pool.connection() as conn:
            for key, run_id, at in lookups:
                params = {"id": run_id, "environment_id": env.id}
                found = await fetch_one(conn, Q.get_run, params)
                if found:
                    related[key] = _detail(found, max(at, 0))
            if children is None:
                params = {"id": run["id"], "environment_id": env.id}
                children = await fetch_all(conn, Q.run_children, params)
    if children:
        related["children"] = [_detail(child, depth + 1) for child in children]
    return related
