"""The loop every background service runs: sweep, log a failure, sleep, again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

#: one sweep; returns the seconds to sleep before the next (None: the service's interval)
Sweep = Callable[[], Awaitable[float | None]]


async def periodic(name: str, sweep: Sweep, interval: float) -> None:
    """Run ``sweep`` until cancelled. A sweep that raises is logged and tried again after
    ``interval``: a service never dies of one bad sweep (a database restart, a bad row)."""
    while True:
        wait = interval
        try:
            asked = await sweep()
            if asked is not None:
                wait = asked
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s sweep failed; retrying", name)
        await asyncio.sleep(wait)


def until_due(seconds: float | None, max_sleep: float, floor: float) -> float:
    """How long to sleep for a row due in ``seconds`` (None: nothing is due)."""
    if seconds is None:
        return max_sleep
    return min(max_sleep, max(floor, seconds))
