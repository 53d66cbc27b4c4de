"""The run changes of each environment, numbered, for ElectricSQL-style shape subscriptions.

Each API process keeps, per environment it has served a shape for, a bounded in-memory log of
the changes the :class:`~worker.engine.realtime.RealtimeHub` delivers (our LISTEN/NOTIFY). A
shape's offset is a position in this log, so a long-poll asks "what happened after N" and no
status a run went through is lost between two polls. A position the log no longer holds (it
was trimmed, the process restarted, another replica answered, or the LISTEN connection
dropped) makes the client refetch the shape from scratch (Electric's 409 ``must-refetch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from worker.engine import realtime

MAX_ENTRIES = 20_000
#: a shape session (its handle) is forgotten after this long without a request
SESSION_IDLE_SECONDS = 600.0


@dataclass(frozen=True)
class Entry:
    seq: int
    change: realtime.RunChange


class EnvLog:
    """Changes of one environment, in notification (= commit) order."""

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque(maxlen=MAX_ENTRIES)
        self.seq = 0
        #: positions at or before this are unreliable (notifications may have been lost)
        self.broken_at = 0
        self.changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def holds(self, seq: int) -> bool:
        """Can every change after ``seq`` be read from the log?"""
        oldest = self.entries[0].seq - 1 if self.entries else self.seq
        return seq >= self.broken_at and seq >= oldest and seq <= self.seq

    def after(self, seq: int) -> list[Entry]:
        return [e for e in self.entries if e.seq > seq]

    async def wait(self, seq: int, timeout: float) -> None:
        """Until the log moves past ``seq`` or ``timeout`` seconds pass."""
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.seq > seq), timeout)


@dataclass
class Session:
    """One client's shape: what it has been sent, so a replayed change is not sent again."""

    handle: str
    shape: str
    sent_us: dict[str, int] = field(default_factory=dict)
    used_at: float = field(default_factory=time.monotonic)


class ElectricLogs:
    def __init__(self, hub: realtime.RealtimeHub) -> None:
        self._hub = hub
        self._logs: dict[str, EnvLog] = {}
        self._sessions: dict[str, Session] = {}
        self.process_id = secrets.token_hex(4)

    async def log(self, environment_id: str) -> EnvLog:
        """The environment's log, following the hub from now on."""
        env_log = self._logs.get(environment_id)
        if env_log is None:
            env_log = self._logs[environment_id] = EnvLog()
            env_log.task = asyncio.create_task(self._follow(environment_id, env_log))
        await env_log.ready.wait()
        return env_log

    async def _follow(self, environment_id: str, env_log: EnvLog) -> None:
        sub = await self._hub.subscribe(environment_id)
        env_log.ready.set()
        try:
            while True:
                item = await sub.queue.get()
                async with env_log.changed:
                    env_log.seq += 1
                    if item is realtime.RESYNC:
                        env_log.broken_at = env_log.seq
                    elif isinstance(item, realtime.RunChange):
                        env_log.entries.append(Entry(env_log.seq, item))
                    env_log.changed.notify_all()
        finally:
            self._hub.unsubscribe(sub)

    def new_session(self, shape: str) -> Session:
        self._expire()
        session = Session(f"{self.process_id}-{secrets.token_hex(8)}", shape)
        self._sessions[session.handle] = session
        return session

    def session(self, handle: str | None, shape: str) -> Session | None:
        session = self._sessions.get(handle or "")
        if session is None or session.shape != shape:
            return None
        session.used_at = time.monotonic()
        return session

    def _expire(self) -> None:
        cutoff = time.monotonic() - SESSION_IDLE_SECONDS
        for handle in [h for h, s in self._sessions.items() if s.used_at < cutoff]:
            del self._sessions[handle]

    async def stop(self) -> None:
        for env_log in self._logs.values():
            if env_log.task is not None:
                env_log.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await env_log.task
        self._logs.clear()
