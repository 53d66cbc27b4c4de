"""Following runs as they change: a snapshot, then every change in commit order, each row as
of its own status (docs/api.md, "Realtime"). The API turns what :func:`follow` yields into SSE
events; which runs a feed covers is one of :func:`of_run`, :func:`of_tag`, :func:`of_batch`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Literal

from worker.common.statuses import FINAL_STATUSES
from worker.engine import realtime
from worker.engine.db import Pool, Row
from worker.engine.keys import Environment
from worker.engine.realtime import RealtimeHub, RunChange

TAG_SNAPSHOT = 100
#: what :func:`follow` yields besides rows
Signal = Literal["keepalive", "end"]


@dataclass(frozen=True)
class Feed:
    """Which runs a subscription covers."""

    snapshot: Callable[[], Awaitable[list[Row]]]
    follows: Callable[[RunChange], bool]
    fetch: Callable[[str], Awaitable[Row | None]]
    #: end the feed once every run seen is final
    until_final: bool


def of_run(pool: Pool, env: Environment, run_id: str) -> Feed:
    async def snapshot() -> list[Row]:
        row = await realtime.run_row(pool, env, run_id)
        return [row] if row else []

    return Feed(snapshot, lambda change: change.run_id == run_id,
                lambda rid: realtime.run_row(pool, env, rid), until_final=True)


def of_tag(pool: Pool, env: Environment, tag: str, *, until_final: bool) -> Feed:
    async def fetch(run_id: str) -> Row | None:
        row = await realtime.run_row(pool, env, run_id)
        return row if row and tag in (row["tags"] or []) else None

    return Feed(lambda: realtime.runs_with_tag(pool, env, tag, TAG_SNAPSHOT),
                lambda change: True, fetch, until_final=until_final)


def of_batch(pool: Pool, env: Environment, batch_id: str) -> Feed:
    return Feed(lambda: realtime.batch_runs(pool, env, batch_id),
                lambda change: change.batch_id == batch_id,
                lambda rid: realtime.run_row(pool, env, rid), until_final=True)


def as_of(row: Row, change: RunChange) -> Row:
    """The row as it was at ``change`` when the row has moved on since (keeps every change a
    run went through, in order, even when a subscriber reads late). A change to the status the
    row has now is one too (a metadata update while EXECUTING): it keeps its own time, so the
    later change is still sent after it, not taken for one already sent."""
    if change.updated_us >= row["updated_us"]:
        return row
    past = dict(row, status=change.status, updated_us=change.updated_us)
    if change.status not in FINAL_STATUSES:
        past.update(output=None, output_type=None, completed_at=None)
    return past


@dataclass
class _Seen:
    seen_us: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)

    def fresh(self, row: Row) -> bool:
        return bool(row["updated_us"] > self.seen_us.get(row["id"], -1))

    def record(self, row: Row) -> None:
        self.seen_us[row["id"]] = row["updated_us"]
        self.statuses[row["id"]] = row["status"]

    def all_final(self) -> bool:
        return bool(self.statuses) and all(s in FINAL_STATUSES for s in self.statuses.values())


async def follow(hub: RealtimeHub, env: Environment, feed: Feed, can_read: Callable[[Row], bool],
                 keepalive: float) -> AsyncIterator[Row | Signal]:
    """The feed's rows (snapshot first, then each change), ``"keepalive"`` after ``keepalive``
    quiet seconds, and ``"end"`` last when the feed ends on its own."""
    sub = await hub.subscribe(env.id)
    seen = _Seen()
    try:
        # Subscribed before the snapshot, so no change can fall in between.
        resync = True
        while True:
            if resync:
                for row in await feed.snapshot():
                    if can_read(row) and seen.fresh(row):
                        seen.record(row)
                        yield row
                resync = False
            if feed.until_final and seen.all_final():
                yield "end"
                return
            try:
                item = await asyncio.wait_for(sub.queue.get(), timeout=keepalive)
            except TimeoutError:
                yield "keepalive"
                continue
            if item is realtime.RESYNC:
                resync = True
                continue
            if not isinstance(item, RunChange) or not feed.follows(item):
                continue
            if item.updated_us <= seen.seen_us.get(item.run_id, -1):
                continue  # already sent (the snapshot was newer)
            found = await feed.fetch(item.run_id)
            if found is None or not can_read(found):
                continue
            row = as_of(found, item)
            seen.record(row)
            yield row
    finally:
        hub.unsubscribe(sub)
