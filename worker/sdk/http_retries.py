"""The one retry loop of the SDK and the worker protocol (worker/runtime/api_client.py, with its
own :class:`RetryPolicy`): statuses worth another try, backoff, fail-over to the next API
replica on a connection error (docs/api.md, "Retries")."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol, TypeVar

from worker.sdk.http1 import TransportError


class Reply(Protocol):
    """What the retry loop reads of a response (http1.Response, or httpx's in ``retry.fetch``)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


R = TypeVar("R", bound=Reply)


@dataclass(frozen=True)
class RetryPolicy:
    """How :func:`send_with_retries` treats failures."""

    #: tries in all (1 = no retry)
    attempts: int
    #: statuses tried again (others of 400 and above are refused at once)
    retry_statuses: frozenset[int]
    #: the pause before try ``attempt + 1`` (0-based ``attempt``), given the failed response
    delay: Callable[[int, Reply | None], float]
    #: statuses after which the next API replica is used (connection errors always move on)
    fail_over_statuses: frozenset[int] = frozenset()
    #: the exceptions of a send that got no response (retried, moving on to the next replica)
    transport_errors: tuple[type[Exception], ...] = (TransportError,)


def backoff(attempt: int, response: Reply | None) -> float:
    """The SDK's pause: ``retry-after`` (up to 60 s), else 0.5 s doubling, jittered."""
    if response is not None:
        header = response.headers.get("retry-after")
        if header:
            try:
                return min(60.0, max(0.0, float(str(header))))
            except ValueError:
                pass
    return 0.5 * 2.0**attempt * random.uniform(1.0, 1.5)


SDK_POLICY = RetryPolicy(
    attempts=4, retry_statuses=frozenset({408, 429, 500, 502, 503, 504}), delay=backoff
)


async def send_with_retries(
    send: Callable[[], Awaitable[R]],
    policy: RetryPolicy,
    *,
    fail_over: Callable[[], Awaitable[None]],
    refuse: Callable[[R], NoReturn],
    unreachable: Callable[[Exception], BaseException],
) -> R:
    """Send until a response below 400: ``refuse`` raises for a final error response,
    ``unreachable`` makes the error raised when the last try could not connect."""
    transport_errors = policy.transport_errors
    for attempt in range(policy.attempts):
        response: R | None = None
        last = attempt == policy.attempts - 1
        try:
            response = await send()
        except transport_errors as exc:
            await fail_over()
            if last:
                error = unreachable(exc)
                if error is exc:
                    raise
                raise error from exc
        else:
            if response.status_code < 400:
                return response
            if response.status_code not in policy.retry_statuses or last:
                refuse(response)
            if response.status_code in policy.fail_over_statuses:
                await fail_over()
        await asyncio.sleep(policy.delay(attempt, response))
    raise AssertionError("unreachable")
