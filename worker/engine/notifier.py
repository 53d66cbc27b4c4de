"""Wake-ups for long polls, fed by Postgres LISTEN/NOTIFY on one connection per API process.

Channels: ``trigger_runs`` (payload: an environment id; runs may be ready to lease) and
``trigger_waitpoints`` (payload: a waitpoint id that completed). A notification is only a hint:
waiters always time out into a poll, so a lost notification costs latency, never a run.

Other channels are given to a :class:`Listener` (the API's key cache listens on
``trigger_keys`` this way): it hears each payload, and when the connection comes up or goes
down, so it can stop trusting what it cached while notifications may be missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

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

    def listen(self, channel: str, listener: Listener) -> None:
        """Give ``channel``'s notifications to ``listener`` (call before :meth:`start`)."""
        self._listeners[channel] = listener

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
                    for channel in (*CHANNELS, *self._listeners):
                        await conn.execute(f"LISTEN {channel}")
                    # Anything missed while (re)connecting: wake everyone to look again.
                    for channel, key in list(self._events):
                        self.wake(key, channel)
                    for listener in self._listeners.values():
                        listener.on_up()
                    self._session += 1
                    self._listening = True
                    async for note in conn.notifies():
                        heard = self._listeners.get(note.channel)
                        if heard is None:
                            self.wake(note.payload, note.channel)
                        else:
                            heard.on_note(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in 1 s", exc)
            finally:
                self._listening = False
                for listener in self._listeners.values():
                    listener.on_down()
            await asyncio.sleep(1)
