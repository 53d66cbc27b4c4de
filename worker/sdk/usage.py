"""``usage``: compute time and an estimated cost of the current run (Trigger.dev's ``usage``).

The cost is an *estimate* from the machine preset (ctx.machine.name) at Trigger.dev's cloud list
prices (:data:`CENTS_PER_MS`) plus its per-run base cost; this engine bills nothing. Time is CPU
time, as in Trigger.dev: the executor process runs one attempt at a time, so its CPU time since
the attempt started is the attempt's (waits cost nothing). Earlier attempts are not counted:
``total`` covers this attempt.

``usage.get_current()`` → :class:`Usage`; ``with usage.measure() as m: ...`` then
``m.duration_ms`` / ``m.cost_in_cents``; or Trigger.dev's form
``result, compute = await usage.measure(fn)``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from worker.sdk import attempt_hooks
from worker.sdk.context import current_context

#: US cents per millisecond of each preset (Trigger.dev cloud prices per second / 1000 * 100)
CENTS_PER_MS = {
    "micro": 0.0000169 * 100 / 1000,
    "small-1x": 0.0000338 * 100 / 1000,
    "small-2x": 0.0000675 * 100 / 1000,
    "medium-1x": 0.0000850 * 100 / 1000,
    "medium-2x": 0.0001700 * 100 / 1000,
    "large-1x": 0.0003400 * 100 / 1000,
    "large-2x": 0.0006800 * 100 / 1000,
}
BASE_COST_IN_CENTS = 0.0025

_attempt_started: list[float] = []


@dataclass(frozen=True)
class Compute:
    duration_ms: float
    cost_in_cents: float


@dataclass(frozen=True)
class Usage:
    attempt: Compute
    total: Compute
    base_cost_in_cents: float
    total_cost_in_cents: float


def _machine() -> str:
    ctx = current_context()
    machine = ctx.get("machine") if ctx is not None else None
    name = machine.get("name") if machine is not None else None
    return str(name) if name in CENTS_PER_MS else "small-1x"


def _compute(duration_ms: float) -> Compute:
    return Compute(round(duration_ms, 3), duration_ms * CENTS_PER_MS[_machine()])


@dataclass
class Measurement:
    started: float = 0.0
    duration_ms: float = 0.0
    cost_in_cents: float = 0.0

    def __enter__(self) -> Measurement:
        self.started = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        compute = _compute((time.process_time() - self.started) * 1000)
        self.duration_ms, self.cost_in_cents = compute.duration_ms, compute.cost_in_cents


class UsageApi:
    def get_current(self) -> Usage:
        started = _attempt_started[-1] if _attempt_started else time.process_time()
        attempt = _compute((time.process_time() - started) * 1000)
        return Usage(attempt, attempt, BASE_COST_IN_CENTS,
                     BASE_COST_IN_CENTS + attempt.cost_in_cents)

    def measure(self, fn: Callable[[], object] | None = None) -> Any:
        if fn is None:
            return Measurement()
        return self._measure_call(fn)

    async def _measure_call(self, fn: Callable[[], object]) -> tuple[object, Compute]:
        with Measurement() as m:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
        return result, Compute(m.duration_ms, m.cost_in_cents)


async def _started(ctx: object) -> None:
    _attempt_started[:] = [time.process_time()]


attempt_hooks.on_attempt_start(_started)
usage = UsageApi()
