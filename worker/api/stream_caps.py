"""Caps on long-lived requests per environment, per API process: SSE streams (realtime) and
long polls (worker dequeue with ``wait_ms``, waitpoint waits). Past a cap the request is answered
429 with ``Retry-After`` at once, so one environment cannot hold every connection of a replica.

``TRIGGER_MAX_SSE_PER_ENV`` (default 500) and ``TRIGGER_MAX_LONG_POLLS_PER_ENV`` (default 500), read
by ``worker.api.settings``.
"""

from __future__ import annotations

import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from worker.engine.errors import EngineError, Kind


class TooManyStreams(EngineError):
    kind = Kind.too_many
    retry_after = 5


class _Slot:
    """One held place; released exactly once (by the stream's end, or when the stream object is
    collected without ever having been iterated, e.g. the client left before the first byte)."""

    def __init__(self, counts: dict[str, int], key: str) -> None:
        self._counts, self._key, self._held = counts, key, True
        counts[key] = counts.get(key, 0) + 1

    def release(self) -> None:
        if self._held:
            self._held = False
            left = self._counts.get(self._key, 1) - 1
            if left > 0:
                self._counts[self._key] = left
            else:
                self._counts.pop(self._key, None)


@dataclass
class StreamCaps:
    sse_per_env: int = 500
    polls_per_env: int = 500
    _sse: dict[str, int] = field(default_factory=dict)
    _polls: dict[str, int] = field(default_factory=dict)

    def open_streams(self, env_id: str) -> int:
        return self._sse.get(env_id, 0)

    def stream(self, env_id: str, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body`` counted against the environment's SSE cap (429 now if it is full)."""
        if self._sse.get(env_id, 0) >= self.sse_per_env:
            raise TooManyStreams(
                f"this environment already has {self.sse_per_env} realtime streams open on this "
                "server (TRIGGER_MAX_SSE_PER_ENV): close some, or subscribe by tag / batch"
            )
        slot = _Slot(self._sse, env_id)

        async def counted() -> AsyncIterator[bytes]:
            try:
                async for chunk in body:
                    yield chunk
            finally:
                slot.release()

        stream = counted()
        weakref.finalize(stream, slot.release)
        return stream

    @asynccontextmanager
    async def poll(self, env_id: str) -> AsyncIterator[None]:
        """A long poll counted against the environment's cap (429 if it is full)."""
        if self._polls.get(env_id, 0) >= self.polls_per_env:
            raise TooManyStreams(
                f"this environment already has {self.polls_per_env} long polls waiting on this "
                "server (TRIGGER_MAX_LONG_POLLS_PER_ENV): poll with a shorter wait or fewer "
                "clients"
            )
        slot = _Slot(self._polls, env_id)
        try:
            yield
        finally:
            slot.release()
