"""The replica's run slots, shared by the two calls that lease runs (docs/protocol.md,
"Complete and lease next").

Runs come from the ``/dequeue`` long-poll and from ``/complete`` when it carries a ``lease``.
Each call reserves the slots it asks for when it is sent and gives the reservation back once
the runs of its reply are counted as starting, so the two together never lease more runs than
there are free slots (executors + prefetch), whatever order their replies come in.

Which call leases: while completions are being reported (queued, or sent with a lease) the
``/complete`` call takes the free slots and the long-poll waits, so under load one round trip
both reports a run and brings the next. An idle worker long-polls; while that poll is open a
``/complete`` leases nothing (the poll gets a new run as soon as it is queued, and a lease on
every completion would make the API run a dequeue that finds nothing). An API that answers a
lease without ``runs`` does not lease on completion: from then on only the long-poll leases.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from worker.common.protocol import Wire
from worker.runtime.settings import PREFETCH_PER_EXECUTOR, SHORT_RUN_PREFETCH

if TYPE_CHECKING:
    from worker.runtime.pool import Pool

#: the most runs one call may ask for (the API's limit)
MAX_RUNS = 100


@dataclass(frozen=True, slots=True)
class Lease:
    """The ``lease`` of one ``/complete`` call: slots reserved until its reply is handled."""

    versions: list[str]
    max_runs: int
    #: when it was reserved (time.monotonic())
    sent: float = 0.0

    def to_wire(self) -> Wire:
        return {"versions": self.versions, "max_runs": self.max_runs}


class Slots:
    def __init__(self, pool: Callable[[], Pool | None], prefetch: int | None,
                 starting: set[str], stopping: Callable[[], bool],
                 capacity: asyncio.Event) -> None:
        #: the current version's pool (None before the first one is up)
        self._pool = pool
        #: runs leased ahead of a free executor (None: as many as the pool has executors)
        self._prefetch = prefetch
        #: runs leased and not on an executor yet
        self._starting = starting
        self._stopping = stopping
        #: set whenever slots may have become free (the long-poll waits on it)
        self.capacity = capacity
        self.reserved = 0
        #: a ``/dequeue`` long-poll is open
        self.polling = False
        #: ``/complete`` calls in flight that carry a lease
        self.leasing = 0
        #: False once the API answered a lease without ``runs`` (it does not lease on complete)
        self.complete_leases = True
        #: runs leased by ``/complete`` calls so far
        self.leased_on_complete = 0
        #: moving averages of the time runs take on an executor and of a ``/complete`` call
        #: that leases (none measured yet: no assumption)
        self.run_seconds = 1.0
        self.runs_observed = 0
        self.trip_seconds = 0.0

    def version_id(self) -> str | None:
        pool = self._pool()
        return pool.version_id if pool is not None else None

    def available(self) -> int:
        """Free executors + prefetch, less the runs starting and the reservations."""
        pool = self._pool()
        if pool is None:
            return 0
        ahead = self._prefetch if self._prefetch is not None else self.default_prefetch(
            pool.size)
        return pool.free_slots() + ahead - len(self._starting) - self.reserved

    def default_prefetch(self, size: int) -> int:
        """:data:`PREFETCH_PER_EXECUTOR` runs per executor; at least
        :data:`SHORT_RUN_PREFETCH` in all while an executor finishes a run or more during one
        ``/complete`` round trip (short runs: a small pool would use up its runs ahead within
        a round trip or two, and each call would carry a run or two, whereas the API's and
        Postgres' cost is mostly per call)."""
        ahead = PREFETCH_PER_EXECUTOR * size
        if ahead < SHORT_RUN_PREFETCH and self.trip_seconds >= self.run_seconds:
            return SHORT_RUN_PREFETCH
        return ahead

    def observe(self, seconds: float) -> None:
        """A run took ``seconds`` on its executor (a moving average over the last ~20)."""
        if self.runs_observed == 0:
            self.run_seconds = seconds
        else:
            self.run_seconds += (seconds - self.run_seconds) * 0.05
        self.runs_observed += 1

    def reserve(self, keep: int = 0) -> int:
        """Reserve the free slots (at most :data:`MAX_RUNS`, ``keep`` left aside); how many."""
        n = max(0, min(self.available() - keep, MAX_RUNS))
        self.reserved += n
        return n

    def release(self, n: int) -> None:
        """Give a reservation back (after the reply's runs were added to the starting ones)."""
        self.reserved -= n
        self.capacity.set()

    def lease_for_complete(self, keep: int) -> Lease | None:
        """The lease a ``/complete`` call sends now (its slots reserved), or None.

        ``keep``: slots the batch's in-place retries will take (the engine keeps their
        leases, and their next attempts run here)."""
        if not self.complete_leases or self.polling or self._stopping():
            return None
        version = self.version_id()
        if version is None:
            return None
        n = self.reserve(keep)
        if n == 0:
            return None
        self.leasing += 1
        return Lease([version], n, time.monotonic())

    def end_lease(self, lease: Lease, runs: int | None, *, refused: bool = False) -> None:
        """The call of ``lease`` ended with ``runs`` leased (None: its reply had no ``runs``,
        or it failed). ``refused``: the API will not lease on complete (no ``runs`` in its
        reply, or it refused the field). Call just before the runs are counted as starting."""
        self.leasing -= 1
        if runs is not None:
            trip = time.monotonic() - lease.sent
            self.trip_seconds += (trip - self.trip_seconds) * (0.1 if self.trip_seconds else 1)
        if refused:
            self.complete_leases = False
        self.leased_on_complete += runs or 0
        self.release(lease.max_runs)

    def defer_poll(self, completions_queued: bool) -> bool:
        """Should the long-poll wait: the completions being reported lease the slots."""
        return self.complete_leases and (completions_queued or self.leasing > 0)
