"""Retention: finished runs older than the retention period are deleted with everything that
hangs off them (attempts, logs, packets, stream chunks, journal, their waitpoints, and spans when
the ``run_spans`` table exists), then completed standalone waitpoints and emptied batches.

Spans older than ``TRIGGER_SPAN_RETENTION_DAYS`` (default 30; ``0`` keeps them) are deleted by
the same sweep, whatever their run. The period is ``TRIGGER_RETENTION_DAYS`` (default 30; ``0``
turns run retention off), overridden per
environment by ``environments.retention_days`` (``trigger retention set``). Work goes in small
batches (``TRIGGER_RETENTION_BATCH``, default 500 runs), each a short transaction that skips rows
another transaction holds, with a pause between batches: a sweep never holds locks for long nor
starves the dequeue (bench/retention.py measures the drain beside it).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime

from worker.engine import spans
from worker.engine.db import Pool, fetch_all, fetch_one
from worker.engine.queries import Q
from worker.engine.services.periodic import periodic
from worker.engine.settings import RetentionSettings

log = logging.getLogger(__name__)


@dataclass
class SweepResult:
    runs: int = 0
    waitpoints: int = 0
    batches: int = 0


async def _spans_table(pool: Pool) -> bool:
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.spans_table_has_run_id)
    return bool(row and row["present"])


async def _delete_runs(pool: Pool, env_id: str, cutoff: datetime, limit: int,
                       spans: bool) -> int:
    async with pool.connection() as conn, conn.transaction():
        params = {"environment_id": env_id, "cutoff": cutoff, "limit": limit}
        ids = [r["id"] for r in await fetch_all(conn, Q.retention_pick_runs, params)]
        if ids:
            if spans:
                await conn.execute(Q.retention_delete_spans, {"ids": ids})
            await conn.execute(Q.retention_delete_runs, {"ids": ids})
    return len(ids)


async def _delete_rest(pool: Pool, query: str, env_id: str, cutoff: datetime, limit: int) -> int:
    async with pool.connection() as conn, conn.transaction():
        cur = await conn.execute(query, {"environment_id": env_id, "cutoff": cutoff,
                                         "limit": limit})
        return cur.rowcount


async def sweep(pool: Pool, settings: RetentionSettings | None = None) -> SweepResult:
    """One full pass over every environment; returns what was deleted."""
    settings = settings or RetentionSettings()
    done = SweepResult()
    if settings.days <= 0:
        return done
    spans = await _spans_table(pool)
    async with pool.connection() as conn:
        envs = await fetch_all(conn, Q.retention_environments, {"default_days": settings.days})
    for env in envs:
        env_id, cutoff = str(env["id"]), env["cutoff"]
        while (n := await _delete_runs(pool, env_id, cutoff, settings.batch, spans)) > 0:
            done.runs += n
            await asyncio.sleep(settings.pause)
        while (n := await _delete_rest(pool, Q.retention_delete_waitpoints, env_id, cutoff,
                                       settings.batch)) > 0:
            done.waitpoints += n
            await asyncio.sleep(settings.pause)
        while (n := await _delete_rest(pool, Q.retention_delete_batches, env_id, cutoff,
                                       settings.batch)) > 0:
            done.batches += n
            await asyncio.sleep(settings.pause)
    return done


async def run_retention(pool: Pool, settings: RetentionSettings) -> None:
    """Runs past ``days`` and spans past ``span_days``: the one place either is deleted."""
    if settings.days <= 0 and settings.span_days <= 0:
        log.info("retention is off (TRIGGER_RETENTION_DAYS=0, TRIGGER_SPAN_RETENTION_DAYS=0)")
        return

    async def once() -> None:
        result = await sweep(pool, settings)
        if result.runs or result.waitpoints or result.batches:
            log.info("retention: deleted %d runs, %d waitpoints, %d batches",
                     result.runs, result.waitpoints, result.batches)
        if settings.span_days > 0:
            removed = await spans.delete_expired(pool, settings.span_days)
            if removed:
                log.info("retention: deleted %d spans older than %d days", removed,
                         settings.span_days)

    await periodic("retention", once, settings.interval)
