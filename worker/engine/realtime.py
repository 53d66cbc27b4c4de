"""Realtime: run change notifications (LISTEN/NOTIFY) fanned out to subscribers, and streams.

A statement-level trigger on ``runs`` (migration 0003) sends ``trigger_run_changes`` with one
line per changed run: ``<env id> <run id> <batch id or -> <status> <updated_at µs>``. Stream
appends send ``trigger_stream_chunks``: ``<env id> <run id> <last seq> <stream>``.

Each API process has one :class:`RealtimeHub`, which listens on the process's one LISTEN
connection (engine/notifier.py) from its first subscription on. Subscribers get every change
of their environment in commit order and filter it themselves. Notifications are hints with
enough detail to keep status order; the data is re-read from the row. If the LISTEN
connection drops, every subscriber receives :data:`RESYNC` and re-reads its state, so nothing
is missed for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.common.limits import json_problem
from worker.common.statuses import FINAL_STATUSES
from worker.engine.db import Params, Pool, Row, fetch_all, fetch_one, one_statement
from worker.engine.errors import EngineError, NotFound
from worker.engine.keys import Environment
from worker.engine.notifier import Listener, Notifier
from worker.engine.queries import Q

log = logging.getLogger(__name__)
RUN_CHANNEL = "trigger_run_changes"
STREAM_CHANNEL = "trigger_stream_chunks"
MAX_STREAM_NAME = 128
#: how many runs created by this process :meth:`RealtimeHub.running` keeps track of (the
#: newest; an older one is read as before)
RUNNING_KEPT = 10_000


@dataclass(frozen=True)
class RunChange:
    run_id: str
    batch_id: str | None
    status: str
    updated_us: int


@dataclass(frozen=True)
class StreamChange:
    run_id: str
    stream: str
    seq: int


def _nothing() -> None:
    pass


RESYNC = object()
"""Put on every subscriber's queue when notifications may have been lost."""


@dataclass(eq=False)
class Subscription:
    environment_id: str
    queue: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)


class FinalWatch(asyncio.Event):
    """A ``waitMs`` retrieve waiting for a run to end: set when it may have ended; holds the
    final row when a completion of this process read it for this watcher (see
    :meth:`RealtimeHub.wake_final`)."""

    def __init__(self, environment_id: str | None, children: bool) -> None:
        super().__init__()
        self.environment_id = environment_id
        self.children = children
        self._row: Row | None = None

    def hand(self, row: Row) -> None:
        own = dict(row)  # each reader may add its own keys (related_runs)
        if not self.children:
            own.pop("children", None)
        self._row = own

    def take(self) -> Row | None:
        """The handed row (once), or None: read the run."""
        row, self._row = self._row, None
        return row


class RealtimeHub:
    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._subs: dict[str, set[Subscription]] = {}
        #: run id -> events of the long-polls waiting for that run to end (``waitMs``)
        self._finals: dict[str, set[FinalWatch]] = {}
        #: run id -> completions of this process that will hand its watchers the final run
        self._claimed: dict[str, int] = {}
        self._joined = False
        self._listening = asyncio.Event()
        #: LISTEN sessions so far: a change made while none was up may have been missed
        self._session = 0
        #: run id -> (environment id, session): runs this process created while listening,
        #: not final as far as that session has heard (:meth:`running`); oldest first
        self._running: dict[str, tuple[str, int]] = {}

    async def subscribe(self, environment_id: str) -> Subscription:
        """Register a subscriber; returns once LISTEN is active (so no later change is
        missed: take the snapshot *after* subscribing)."""
        sub = Subscription(environment_id)
        self._subs.setdefault(environment_id, set()).add(sub)
        await self._listen()
        return sub

    async def watch_final(self, run_id: str, environment_id: str | None = None, *,
                          children: bool = False) -> FinalWatch:
        """An event set when a change of ``run_id`` to a final status commits (or when
        notifications may have been lost). Returns once LISTEN is active: read the run
        *after* it, then wait on the event. A watcher costs one set lookup per change, not a
        queue fed with its whole environment's changes. Pair with :meth:`unwatch_final`.

        With ``environment_id``, a completion committed by this process may hand the watcher
        the run as its reader would read it (``FinalWatch.take``; ``children``: with the runs
        it triggered), read in the completion's own round trip."""
        watch = FinalWatch(environment_id, children)
        self._finals.setdefault(run_id, set()).add(watch)
        await self._listen()
        return watch

    def claim_final(self, run_id: str, environment_id: str) -> bool:
        """A completion of this process is about to commit ``run_id`` in ``environment_id``:
        if a watcher would take the run from it (one of that environment), claim the run and
        return True — the completion reads it after its commit, in its own round trip, and
        hands it over (:meth:`wake_final`); until :meth:`release_final`, the run's change
        notification does not wake its watchers (they would read it themselves first).
        Every claim is released, whatever happens to the completion."""
        if not any(w.environment_id == environment_id for w in self._finals.get(run_id, ())):
            return False
        self._claimed[run_id] = self._claimed.get(run_id, 0) + 1
        return True

    def release_final(self, run_ids: list[str]) -> None:
        """End the claims of :meth:`claim_final`: watchers not woken by the completion with
        their row are woken now (they read the run themselves)."""
        for run_id in run_ids:
            left = self._claimed.get(run_id, 0) - 1
            if left > 0:
                self._claimed[run_id] = left
            else:
                self._claimed.pop(run_id, None)
            for watch in self._finals.get(run_id, ()):
                watch.set()

    def wake_final(self, run_id: str, row: Row | None = None,
                   environment_id: str | None = None) -> None:
        """This process committed ``run_id``'s final status: its watchers need not wait for
        the notification (it still comes, for the other processes, and is harmless here).
        ``row``: the run as run_reads.assemble read it after that commit, with its children,
        for the watchers of ``environment_id``."""
        self._running.pop(run_id, None)
        for watch in self._finals.get(run_id, ()):
            if row is not None and watch.environment_id == environment_id:
                watch.hand(row)
            watch.set()

    def expect(self, run_id: str, environment_id: str) -> None:
        """A trigger of this process is about to create ``run_id`` (before its commit, so that
        no later change of the run can be heard before this). Pair with :meth:`forget` should
        the trigger create no run of that id."""
        if self._listening.is_set():
            self._running[run_id] = (environment_id, self._session)
            if len(self._running) > RUNNING_KEPT:
                del self._running[next(iter(self._running))]

    def forget(self, run_id: str) -> None:
        self._running.pop(run_id, None)

    def running(self, run_id: str, environment_id: str) -> bool:
        """True when ``run_id`` of ``environment_id`` was created by this process and is not
        final: no final status of it was heard since, by a LISTEN session up from before its
        creation until now. A ``waitMs`` retrieve then need not read the run before waiting
        (runs.wait_final): should it end from now on, the notification is still to come."""
        return (self._listening.is_set()
                and self._running.get(run_id) == (environment_id, self._session))

    def unwatch_final(self, run_id: str, event: asyncio.Event) -> None:
        events = self._finals.get(run_id)
        if events is not None:
            events.discard(event)
            if not events:
                del self._finals[run_id]

    async def _listen(self) -> None:
        if self._listening.is_set():  # the common case: nothing to wait for
            return
        if not self._joined:
            self._joined = True
            await self._notifier.join({
                RUN_CHANNEL: Listener(lambda p: self._dispatch(RUN_CHANNEL, p), self._up,
                                      self._listening.clear),
                STREAM_CHANNEL: Listener(lambda p: self._dispatch(STREAM_CHANNEL, p),
                                         _nothing, _nothing),
            })
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout=10)

    def _up(self) -> None:
        """Both channels are listened to (again): a new session; changes made while none was
        up may have been missed (every subscriber re-reads)."""
        self._session += 1
        self._running.clear()  # heard by an earlier session: may be out of date
        if self._session > 1:
            self._resync_all()
        self._listening.set()

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.environment_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.environment_id]

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == RUN_CHANNEL:
            for line in payload.splitlines():
                parts = line.split(" ")
                if len(parts) != 5:
                    continue
                env_id, run_id, batch, status, updated = parts
                if status in FINAL_STATUSES:
                    self._running.pop(run_id, None)
                    if run_id not in self._claimed:
                        self.wake_final(run_id)
                change = RunChange(run_id, None if batch == "-" else batch, status, int(updated))
                for sub in self._subs.get(env_id, ()):
                    sub.queue.put_nowait(change)
        elif channel == STREAM_CHANNEL:
            parts = payload.split(" ", 3)
            if len(parts) == 4:
                env_id, run_id, seq, stream = parts
                stream_change = StreamChange(run_id, stream, int(seq))
                for sub in self._subs.get(env_id, ()):
                    sub.queue.put_nowait(stream_change)

    def _resync_all(self) -> None:
        for subs in self._subs.values():
            for sub in subs:
                sub.queue.put_nowait(RESYNC)
        for events in self._finals.values():
            for event in events:
                event.set()


# --- reads ---------------------------------------------------------------------------------


async def run_row(pool: Pool, env: Environment, run_id: str) -> Row | None:
    async with pool.connection() as conn:
        return await fetch_one(conn, Q.realtime_run, {"id": run_id, "environment_id": env.id})


async def runs_with_tag(
    pool: Pool, env: Environment, tag: str, limit: int = 100
) -> list[Row]:
    async with pool.connection() as conn:
        params = {"environment_id": env.id, "tag": tag, "limit": limit}
        rows = await fetch_all(conn, Q.realtime_runs_with_tag, params)
    return list(reversed(rows))  # oldest first, like a timeline


async def batch_runs(pool: Pool, env: Environment, batch_id: str) -> list[Row]:
    async with pool.connection() as conn:
        params = {"environment_id": env.id, "batch_id": batch_id}
        if await fetch_one(conn, Q.realtime_batch_exists, params) is None:
            raise NotFound(f"batch {batch_id!r} not found in the {env.slug} environment")
        return await fetch_all(conn, Q.realtime_batch_runs, params)


# --- streams -------------------------------------------------------------------------------


def check_stream_name(stream: str) -> None:
    if not stream or len(stream) > MAX_STREAM_NAME or any(c.isspace() for c in stream):
        raise EngineError(f"stream name must be 1-{MAX_STREAM_NAME} characters without whitespace")


async def append_chunks(
    pool: Pool, env: Environment, run_id: str, stream: str, chunks: list[Any], done: bool
) -> Row:
    """Append JSON values to a run's stream (and close it when ``done``); returns the last seq.

    Writers of one stream are serialised by an advisory lock, so sequence numbers are dense
    and ordered as appended.
    """
    check_stream_name(stream)
    for index, chunk in enumerate(chunks):  # the stored-JSON rule (text: a NUL is escaped)
        problem = json_problem(chunk, nul_ok=True)
        if problem:
            raise EngineError(f"chunk {index} {problem}")
    datas = [orjson.dumps(c).decode() for c in chunks]
    dones = [False] * len(datas)
    if done:
        datas.append(None)  # type: ignore[arg-type]
        dones.append(True)
    params: Params = {"run_id": run_id, "stream": stream, "environment_id": env.id}
    async with pool.connection() as conn, conn.transaction():
        brief = {"id": run_id, "environment_id": env.id}
        if await fetch_one(conn, Q.run_status_brief, brief) is None:
            raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
        await conn.execute(Q.lock_stream, params)
        state = await fetch_one(conn, Q.stream_state, params)
        assert state is not None
        if state["done"]:
            raise EngineError(f"stream {stream!r} of run {run_id} is closed")
        last = int(state["last_seq"])
        if datas:
            await conn.execute(
                Q.insert_stream_chunks,
                {**params, "first_seq": last + 1, "datas": datas, "dones": dones},
            )
            last += len(datas)
            await conn.execute(Q.notify_stream, {**params, "seq": last})
    return {"seq": last}


async def read_chunks(
    pool: Pool, run_id: str, stream: str, after: int, limit: int = 500
) -> list[Row]:
    async with pool.connection() as conn:
        params = {"run_id": run_id, "stream": stream, "after": after, "limit": limit}
        return await fetch_all(conn, Q.read_stream_chunks, params)


async def run_brief(pool: Pool, env: Environment, run_id: str) -> Row:
    """The run's id, status, task, tags and batch: one read-only statement in one round trip."""
    rows = await one_statement(pool, Q.run_status_brief, {"id": run_id, "environment_id": env.id})
    row = rows[0] if rows else None
    if row is None:
        raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
    return row
