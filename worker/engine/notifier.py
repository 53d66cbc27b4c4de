"""Wake-ups for long polls, fed by Postgres LISTEN/NOTIFY on one connection per API process.

Channels: ``trigger_runs`` (payload: an environment id; runs may be ready to lease) and
``trigger_waitpoints`` (payload: a waitpoint id that completed). A notification is only a hint:
waiters always time out into a poll, so a lost notification costs latency, never a run.

Other channels are given to a :class:`Listener` (the API's key cache listens on
``trigger_keys`` this way): it hears each payload, and when the connection comes up or goes
down, so it can stop trusting what it cached while notifications may be missed. A listener
may also join later (:meth:`Notifier.join`: the realtime hub, on its first subscriber).

One connection for every channel: Postgres wakes each listening backend of the database at
every notifying commit, whatever channels it listens to, and the committing backend signals
each before it answers (two connections cost every trigger and completion one more process
woken, on their own path: docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

RUNS = "trigger_runs"
WAITPOINTS = "trigger_waitpoints"
CHANNELS = (RUNS, WAITPOINTS)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listener:
    on_note: Callable[[str], None]
    #: the channel is listened to (again): anything before may have been missed
    on_up: Callable[[], None]
    #: the connection is down: notifications are being missed
    on_down: Callable[[], None]


class Notifier:
    def __init__(self, url: str) -> None:
        self._url = url
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._listeners: dict[str, Listener] = {}
        self._task: asyncio.Task[None] | None = None
        #: notifications heard per key on RUNS, and LISTEN sessions so far (see :meth:`mark`)
        self._heard: dict[str, int] = {}
        self._session = 0
        self._listening = False
        #: set when a listener joins: the connection LISTENs to its channels
        self._joined = asyncio.Event()
        #: the channels the current connection listens to
        self._listened: set[str] = set()
        #: set (and replaced) after each round of LISTENs
        self._round = asyncio.Event()

    def listen(self, channel: str, listener: Listener) -> None:
        """Give ``channel``'s notifications to ``listener`` (call before :meth:`start`)."""
        self._listeners[channel] = listener

    async def join(self, listeners: dict[str, Listener], timeout: float = 10) -> None:
        """Give each channel's notifications to its listener from now on; returns once they
        are listened to (or after ``timeout``: while the connection is down, the listeners
        hear ``on_up`` when it is back). Their ``on_up`` comes first. Starts the notifier if
        it is not started yet."""
        self._listeners.update(listeners)
        self._joined.set()
        if self._task is None:
            await self.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not (self._listening and self._listened.issuperset(listeners)):
                    await self._round.wait()

    def event(self, key: str, channel: str = RUNS) -> asyncio.Event:
        """The event set at the next notification of ``key`` on ``channel``.

        Take it *before* looking at the database, then wait on it: a notification that
        arrives in between is not missed.
        """
        event = self._events.get((channel, key))
        if event is None or event.is_set():
            event = self._events[(channel, key)] = asyncio.Event()
        return event

    def mark(self, key: str) -> tuple[int, int] | None:
        """Where ``key``'s notifications on RUNS stand now: two equal marks mean that none
        was heard in between, within one LISTEN session. None while notifications may be
        missed (not listening). A long-poll compares the mark taken before its last look with
        the one of now to skip a look that would find nothing (leases.dequeue)."""
        if not self._listening:
            return None
        return (self._session, self._heard.get(key, 0))

    def wake(self, key: str, channel: str = RUNS) -> None:
        if channel == RUNS:
            self._heard[key] = self._heard.get(key, 0) + 1
        event = self._events.pop((channel, key), None)
        if event is not None:
            event.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="notifier")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen_forever(self) -> None:
        while True:
            try:
                connect = psycopg.AsyncConnection.connect
                async with await connect(self._url, autocommit=True) as conn:
                    await self._serve(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in 1 s", exc)
            finally:
                self._listening = False
                self._listened = set()
                for listener in list(self._listeners.values()):
                    listener.on_down()
            await asyncio.sleep(1)

    async def _serve(self, conn: psycopg.AsyncConnection[Any]) -> None:
        while True:
            self._joined.clear()
            fresh = [c for c in (*CHANNELS, *self._listeners) if c not in self._listened]
            for channel in fresh:
                await conn.execute(f"LISTEN {channel}")
            self._listened.update(fresh)
            if not self._listening:
                # Anything missed while (re)connecting: wake everyone to look again.
                for channel, key in list(self._events):
                    self.wake(key, channel)
                self._session += 1
                self._listening = True
            for channel in fresh:
                if channel in self._listeners:
                    self._listeners[channel].on_up()
            self._round.set()
            self._round = asyncio.Event()
            await self._pump(conn)  # until a listener joins (or the connection fails)

    async def _pump(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Hand out notifications until :meth:`join` asks for more channels."""
        async def hear() -> None:
            async for note in conn.notifies():
                heard = self._listeners.get(note.channel)
                if heard is None:
                    self.wake(note.payload, note.channel)
                else:
                    heard.on_note(note.payload)

        hearing = asyncio.ensure_future(hear())
        joined = asyncio.ensure_future(self._joined.wait())
        try:
            await asyncio.wait((hearing, joined), return_when=asyncio.FIRST_COMPLETED)
        finally:
            joined.cancel()
            if not hearing.done():
                hearing.cancel()  # an idle connection: no query to interrupt
                with contextlib.suppress(asyncio.CancelledError):
                    await hearing
        if hearing.done() and not hearing.cancelled():
            hearing.result()  # the connection failed: raise it
