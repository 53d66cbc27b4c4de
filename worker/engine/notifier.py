"""Wake-ups for long-polling dequeues, fed by Postgres LISTEN/NOTIFY.

A notification is only a hint: waiters always time out into a poll, so a lost notification
costs latency, never a run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

CHANNEL = "trigger_runs"
log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, url: str) -> None:
        self._url = url
        self._events: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def event(self, environment_id: str) -> asyncio.Event:
        """The event set at the next notification for this environment.

        Take it *before* looking for runs, then wait on it: a notification that arrives in
        between is not missed.
        """
        event = self._events.get(environment_id)
        if event is None or event.is_set():
            event = self._events[environment_id] = asyncio.Event()
        return event

    def wake(self, environment_id: str) -> None:
        event = self._events.pop(environment_id, None)
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
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # Anything missed while (re)connecting: wake everyone to re-poll.
                    for env_id in list(self._events):
                        self.wake(env_id)
                    async for note in conn.notifies():
                        self.wake(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in 1 s", exc)
                await asyncio.sleep(1)
