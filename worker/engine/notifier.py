"""Wake-ups for long polls, fed by Postgres LISTEN/NOTIFY on one connection per API process.

Channels: ``trigger_runs`` (payload: an environment id; runs may be ready to lease) and
``trigger_waitpoints`` (payload: a waitpoint id that completed). A notification is only a hint:
waiters always time out into a poll, so a lost notification costs latency, never a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

RUNS = "trigger_runs"
WAITPOINTS = "trigger_waitpoints"
CHANNELS = (RUNS, WAITPOINTS)
log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, url: str) -> None:
        self._url = url
        self._events: dict[tuple[str, str], asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def event(self, key: str, channel: str = RUNS) -> asyncio.Event:
        """The event set at the next notification of ``key`` on ``channel``.

        Take it *before* looking at the database, then wait on it: a notification that
        arrives in between is not missed.
        """
        event = self._events.get((channel, key))
        if event is None or event.is_set():
            event = self._events[(channel, key)] = asyncio.Event()
        return event

    def wake(self, key: str, channel: str = RUNS) -> None:
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
                    for channel in CHANNELS:
                        await conn.execute(f"LISTEN {channel}")
                    # Anything missed while (re)connecting: wake everyone to look again.
                    for channel, key in list(self._events):
                        self.wake(key, channel)
                    async for note in conn.notifies():
                        self.wake(note.payload, note.channel)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in 1 s", exc)
                await asyncio.sleep(1)
