"""Writes to and reads from Postgres through the shared ``_db.sql`` helper."""

from __future__ import annotations

from typing import Any

from worker import logger, task

from ._db import sql

__all__ = ["record_visit"]

_CREATE = """
create table if not exists example_visits (
    id bigserial primary key,
    run_id text not null,
    visitor text not null,
    visited_at timestamptz not null default now()
)
"""


@task(id="record-visit", max_duration=120)
async def record_visit(payload: dict[str, Any] | None, ctx: Any) -> dict[str, Any]:
    visitor = str((payload or {}).get("visitor", "anonymous"))
    logger.info("Recording visit", visitor=visitor, run_id=ctx.run.id)
    try:
        await sql(_CREATE)
        inserted = await sql(
            "insert into example_visits (run_id, visitor) values (%s::text, %s::text) "
            "returning id",
            ctx.run.id,
            visitor,
        )
        rows = await sql(
            "select count(*)::int as visits from example_visits where visitor = %s::text",
            visitor,
        )
    except Exception as exc:
        logger.error("Database operation failed", error=repr(exc), visitor=visitor)
        raise
    visits = rows[0]["visits"] if rows else 0
    logger.info("Visit recorded", inserted_rows=len(inserted), visits=visits)
    return {"visitor": visitor, "visit_id": inserted[0]["id"], "visits": visits}
