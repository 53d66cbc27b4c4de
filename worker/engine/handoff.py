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
    """One long-poll waiting for runs of an environment, with its lease parameters."""

    __slots__ = ("claimed", "params", "result")

    def __init__(self, params: Mapping[str, object]) -> None:
        self.params = params
        self.claimed = False
        #: the rows the claiming trigger leased ([] when it leased none or failed)
        self.result: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()


class Claim:
    """A waiter a trigger has claimed: :meth:`lease` inside the trigger's transaction, then
    :meth:`deliver` after its commit — or :meth:`abandon` when the transaction failed."""

    __slots__ = ("cursor", "waiter")

    def __init__(self, waiter: Waiter) -> None:
        self.waiter = waiter
        self.cursor: AsyncCursor[DictRow] | None = None

    async def lease(self, conn: Conn) -> None:
        # read after the commit (the statement may be in a pipeline that is not sent yet)
        self.cursor = await conn.execute(Q.dequeue, self.waiter.params)

    async def deliver(self) -> None:
        rows = await self.cursor.fetchall() if self.cursor is not None else []
        if not self.waiter.result.done():
            self.waiter.result.set_result(rows)

    def abandon(self) -> None:
        if not self.waiter.result.done():
            self.waiter.result.set_result([])


class Offer:
    """A trigger's offer to a long-poll of its environment: :meth:`lease` inside the trigger's
    transaction, right after the insert of a PENDING run; :func:`offered` delivers after it."""

    __slots__ = ("claim", "env_id", "handoff")

    def __init__(self, handoff: Handoff | None, env_id: str) -> None:
        self.handoff, self.env_id = handoff, env_id
        self.claim: Claim | None = None

    async def lease(self, conn: Conn) -> None:
        if self.handoff is None or self.claim is not None:
            return
        self.claim = self.handoff.claim(self.env_id)
        if self.claim is not None:
            await self.claim.lease(conn)


@contextlib.asynccontextmanager
async def offered(handoff: Handoff | None, env_id: str) -> AsyncIterator[Offer]:
    """Wrap a trigger's transaction: what :meth:`Offer.lease` leased reaches the long-poll
    once the block (and so the transaction in it) ended without an error; on an error the
    long-poll gets nothing and looks again itself."""
    offer = Offer(handoff, env_id)
    try:
        yield offer
    except BaseException:
        if offer.claim is not None:
            offer.claim.abandon()
        raise
    if offer.claim is not None:
        await offer.claim.deliver()


class Handoff:
    """The long-polls of this process that wait for runs, by environment (oldest first)."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[Waiter]] = {}

    @contextlib.contextmanager
    def waiting(self, env_id: str, params: Mapping[str, object]) -> Iterator[Waiter]:
        """Offer a long-poll to triggers of ``env_id`` while the block runs."""
        waiter = Waiter(params)
        queue = self._waiting.setdefault(env_id, [])
        queue.append(waiter)
        try:
            yield waiter
        finally:
            if not waiter.claimed:
                queue.remove(waiter)
                if not queue:
                    self._waiting.pop(env_id, None)

    def claim(self, env_id: str) -> Claim | None:
        """The oldest waiter of ``env_id``, taken out of the offer; None when there is none."""
        queue = self._waiting.get(env_id)
        if not queue:
            return None
        waiter = queue.pop(0)
        if not queue:
            del self._waiting[env_id]
        waiter.claimed = True
        return Claim(waiter)


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
    with handoff.waiting(env_id, params) as waiter:
        notified: asyncio.Future[object] = asyncio.ensure_future(woken.wait())
        handed: asyncio.Future[object] = waiter.result  # type: ignore[assignment]
        try:
            await asyncio.wait({notified, handed}, timeout=timeout,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            notified.cancel()
        if not waiter.claimed:
            return []
    # claimed: the trigger's transaction is in flight and answers in every case
    try:
        return await asyncio.shield(waiter.result)
    except asyncio.CancelledError:
        waiter.result.add_done_callback(lambda done: orphaned(done.result()))
        raise
