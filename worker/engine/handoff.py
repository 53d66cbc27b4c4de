"""Direct hand-off (docs/architecture.md, "Direct hand-off"): a trigger that finds a worker's
``/dequeue`` long-poll waiting in this API process leases to that worker inside the trigger's
own transaction.

Without it a run starts after two transactions in a row: the trigger commits and NOTIFYs, the
long-poll wakes and runs the lease in a transaction of its own. With it, the trigger's
transaction inserts the run and then runs the very same lease statement with the waiting
long-poll's parameters (the same pick under the environment row lock: limits, pauses and
round-robin are exact), and the one commit (synchronous: a 2xx promises the run) covers both.
The long-poll gets the leased rows only once that commit is done; if the trigger's transaction
fails, it gets nothing and looks again by itself, as after any wake-up.

A waiter can be claimed by at most one trigger, and once claimed it waits for that trigger's
answer (never for long: the trigger's transaction is in flight). Long-polls in other API
processes are woken by the NOTIFY as before.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

from psycopg import AsyncCursor
from psycopg.rows import DictRow

from worker.engine.db import Conn, Row
from worker.engine.queries import Q


class Waiter:
    """One long-poll waiting for runs of an environment, with its lease parameters. Its one
    future is answered by whichever comes first: a trigger's hand-off (the rows it leased), a
    notification or the timeout ([]: the long-poll looks itself)."""

    __slots__ = ("claimed", "orphaned", "params", "result")

    def __init__(self, params: Mapping[str, object],
                 orphaned: Callable[[list[Row]], None]) -> None:
        self.params = params
        self.orphaned = orphaned
        self.claimed = False
        self.result: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        """A notification or the timeout: look again (unless a trigger is leasing for us)."""
        if not self.claimed and not self.result.done():
            self.result.set_result([])

    def hand(self, rows: list[Row]) -> None:
        if self.result.cancelled():  # the long-poll is gone: nobody will start these runs
            self.orphaned(rows)
        elif not self.result.done():
            self.result.set_result(rows)


class Offer:
    """A trigger's offer to a long-poll of its environment: :meth:`lease` inside the trigger's
    transaction, right after the insert of a PENDING run; :func:`offered` hands the rows over
    after the commit (or nothing, when the transaction failed).

    The plain trigger with a cached definition (engine/triggering.py) :meth:`claim`s a waiter
    instead, whose lease parameters let its insert lease the run itself in the one-run case
    (runs.sql insert_cached_run_leased), and gives :meth:`leased` what that leased: the run, or
    nothing (the long-poll then looks by itself, as after a notification)."""

    __slots__ = ("cursor", "env_id", "handoff", "rows", "waiter")

    def __init__(self, handoff: Handoff | None, env_id: str) -> None:
        self.handoff, self.env_id = handoff, env_id
        self.waiter: Waiter | None = None
        self.cursor: AsyncCursor[DictRow] | None = None
        self.rows: list[Row] | None = None

    def claim(self) -> Mapping[str, object] | None:
        """Claim a waiting long-poll (once): its lease parameters, or None when none waits."""
        if self.handoff is None or self.waiter is not None:
            return None
        self.waiter = self.handoff.claim(self.env_id)
        return self.waiter.params if self.waiter is not None else None

    async def lease(self, conn: Conn) -> None:
        if self.handoff is None or self.waiter is not None:
            return
        self.waiter = self.handoff.claim(self.env_id)
        if self.waiter is not None:
            # read after the commit (the statement may be in a pipeline not sent yet)
            self.cursor = await conn.execute(Q.dequeue, self.waiter.params)

    def leased(self, rows: list[Row]) -> None:
        """What the trigger's insert leased to the claimed waiter (handed after the commit)."""
        self.rows = rows


@contextlib.asynccontextmanager
async def offered(handoff: Handoff | None, env_id: str) -> AsyncIterator[Offer]:
    """Wrap a trigger's transaction: what :meth:`Offer.lease` leased reaches the long-poll
    once the block (and so the transaction in it) ended without an error; on an error the
    long-poll gets nothing and looks again itself."""
    offer = Offer(handoff, env_id)
    try:
        yield offer
    except BaseException:
        if offer.waiter is not None:
            offer.waiter.hand([])
        raise
    if offer.waiter is not None:
        rows = offer.rows
        if rows is None:
            rows = await offer.cursor.fetchall() if offer.cursor is not None else []
        offer.waiter.hand(rows)
        # One turn of the loop: the long-poll answers its worker before this trigger answers
        # its caller (the run starts sooner; the 2xx waits for that one turn only).
        await asyncio.sleep(0)


class Handoff:
    """The long-polls of this process that wait for runs, by environment (oldest first)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[Waiter]] = {}

    @contextlib.contextmanager
    def waiting(self, env_id: str, params: Mapping[str, object],
                orphaned: Callable[[list[Row]], None]) -> Iterator[Waiter]:
        """Offer a long-poll to triggers of ``env_id`` while the block runs."""
        waiter = Waiter(params, orphaned)
        queue = self._waiting.setdefault(env_id, [])
        queue.append(waiter)
        try:
            yield waiter
        finally:
            if not waiter.claimed:
                queue.remove(waiter)
                if not queue:
                    self._waiting.pop(env_id, None)

    def claim(self, env_id: str) -> Waiter | None:
        """The oldest waiter of ``env_id`` not yet answered (woken, timed out), taken out of the
        offer; None when there is none."""
        queue = self._waiting.get(env_id, [])
        for i, waiter in enumerate(queue):
            if not waiter.result.done():
                del queue[i]
                if not queue:
                    del self._waiting[env_id]
                waiter.claimed = True
                return waiter
        return None


async def wait_for_runs(handoff: Handoff | None, woken: asyncio.Event, env_id: str,
                        params: Mapping[str, object], timeout: float,
                        orphaned: Callable[[list[Row]], None]) -> list[Row]:
    """Wait up to ``timeout`` for a notification (then []: the caller looks itself) or for a
    trigger of this process to hand over the runs it leased for us. Runs handed over after
    this wait was cancelled go to ``orphaned`` (to be released at once)."""
    if handoff is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout)
        return []
    with handoff.waiting(env_id, params, orphaned) as waiter:
        # one future for all three outcomes: a hand-off wakes this task in one loop turn
        notified = asyncio.ensure_future(woken.wait())
        notified.add_done_callback(lambda _: waiter.wake())
        timer = asyncio.get_running_loop().call_later(timeout, waiter.wake)
        try:
            return await waiter.result
        finally:
            notified.cancel()
            timer.cancel()
