"""The slot accounting the /dequeue long-poll and /complete's lease share (worker/runtime/slots.py).

Plain accounting, so it is driven directly: a pool here is only its free executors and size.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from worker.runtime.settings import PREFETCH_PER_EXECUTOR
from worker.runtime.slots import MAX_RUNS, Slots


@dataclass
class _Pool:
    size: int
    free: int
    version_id: str = "v1"

    def free_slots(self) -> int:
        return self.free


def _slots(pool: _Pool, prefetch: int | None, starting: set[str],
           stopping: bool = False) -> Slots:
    return Slots(lambda: pool, prefetch, starting, lambda: stopping, asyncio.Event())  # type: ignore[arg-type,return-value]


def test_the_two_calls_never_lease_more_than_the_free_slots() -> None:
    pool, starting = _Pool(size=2, free=2), set[str]()
    slots = _slots(pool, 2, starting)
    assert slots.available() == 4
    # a /complete reserves what is free (two slots kept for in-place retries)...
    lease = slots.lease_for_complete(keep=2)
    assert lease is not None and lease.max_runs == 2 and lease.versions == ["v1"]
    # ...so a long-poll sent meanwhile asks for the rest only, and a second lease for none
    assert slots.reserve() == 2
    assert slots.lease_for_complete(keep=0) is None
    # the poll's reply: two runs start (counted first), then its reservation is released
    starting.update({"a", "b"})
    slots.release(2)
    assert slots.available() == 0
    # the complete's reply brought one run of the two asked for: one slot is free again
    starting.add("c")
    slots.end_lease(lease, 1)
    assert slots.available() == 1 and slots.reserved == 0 and slots.leasing == 0
    assert slots.leased_on_complete == 1 and slots.capacity.is_set()


def test_who_leases() -> None:
    slots = _slots(_Pool(size=2, free=2), None, set())
    # an open long-poll gets the next run: completions then lease nothing
    slots.polling = True
    assert slots.lease_for_complete(keep=0) is None
    slots.polling = False
    # completions queued or a lease in flight: the long-poll waits for them
    assert slots.defer_poll(completions_queued=True)
    lease = slots.lease_for_complete(keep=0)
    assert lease is not None and lease.max_runs == 2 + 2 * PREFETCH_PER_EXECUTOR
    assert slots.defer_poll(completions_queued=False)
    # an API that answered without "runs": from then on the long-poll alone leases
    slots.end_lease(lease, None, refused=True)
    assert not slots.complete_leases
    assert not slots.defer_poll(completions_queued=True)
    assert slots.lease_for_complete(keep=0) is None


def test_limits() -> None:
    assert _slots(_Pool(size=200, free=200), 0, set()).reserve() == MAX_RUNS
    assert _slots(_Pool(size=2, free=2), 0, set(), stopping=True).lease_for_complete(0) is None
    none = Slots(lambda: None, None, set(), lambda: False, asyncio.Event())
    assert none.reserve() == 0 and none.lease_for_complete(0) is None
