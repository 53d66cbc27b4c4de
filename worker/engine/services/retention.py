"""Retention: finished runs older than the retention period are deleted with everything that
hangs off them (attempts, logs, packets, stream chunks, journal, their waitpoints, and spans when
the ``run_spans`` table exists), then completed standalone waitpoints and emptied batches.

The period is ``TRIGGER_RETENTION_DAYS`` (default 30; ``0`` turns retention off), overridden per
environment by ``environments.retention_days`` (``trigger retention set``). Work goes in small
batches (``TRIGGER_RETENTION_BATCH``, default 500 runs), each a short transaction that skips rows
another transaction holds, with a pause between batches: a sweep never holds locks for long nor
starves the dequeue (bench/retention.py measures the drain beside it).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import datetime

from worker.engine.db import Pool
from worker.engine.queries import Q

log = logging.getLogger(__name__)


def _int_env(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        return int(raw) if raw else default
    except ValueError:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from None


@dataclass(frozen=True)
class RetentionSettings:
    days: int = field(default_factory=lambda: _int_env("TRIGGER_RETENTION_DAYS", 30))
    batch: int = field(default_factory=lambda: _int_env("TRIGGER_RETENTION_BATCH", 500))
    #: seconds between sweeps
    interval: float = field(
        default_factory=lambda: float(_int_env("TRIGGER_RETENTION_INTERVAL", 300)))
    #: seconds between two batches of one sweep (lets other transactions through)
    pause: float = 0.02


@dataclass
class SweepResult:
    runs: int = 0
    waitpoints: int = 0
    batches: int = 0


async def _spans_table(pool: Pool) -> bool:
    async with pool.connection() as conn:
        row = await (await conn.execute(Q.spans_table_has_run_id)).fetchone()
    return bool(row and row["present"])


async def _delete_runs(pool: Pool, env_id: str, cutoff: datetime, limit: int,
                       spans: bool) -> int:
    async with pool.connection() as conn, conn.transaction():
        params = {"environment_id": env_id, "cutoff": cutoff, "limit": limit}
        ids = [r["id"] for r in await (await conn.execute(Q.retention_pick_runs, params)
                                       ).fetchall()]
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
        envs = await (await conn.execute(Q.retention_environments,
                                         {"default_days": settings.days})).fetchall()
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


async def run_retention(pool: Pool, settings: RetentionSettings | None = None) -> None:
    settings = settings or RetentionSettings()
    if settings.days <= 0:
        log.info("retention is off (TRIGGER_RETENTION_DAYS=0)")
        return
    while True:
        try:
            result = await sweep(pool, settings)
            if result.runs or result.waitpoints or result.batches:
                log.info("retention: deleted %d runs, %d waitpoints, %d batches",
                         result.runs, result.waitpoints, result.batches)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("retention sweep failed; retrying")
        await asyncio.sleep(settings.interval)
