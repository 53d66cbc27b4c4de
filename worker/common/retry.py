"""The retry backoff formula of Trigger.dev v4 (docs/triggerdev-semantics.md, "Retries"), in one
place."""

from __future__ import annotations

import random
from typing import Any

DEFAULT_RETRY: dict[str, Any] = {
    "max_attempts": 3,
    "factor": 2.0,
    "min_timeout_ms": 1000,
    "max_timeout_ms": 60000,
    "randomize": True,
}

#: No run is ever attempted more often than this, whatever its options say.
MAX_ATTEMPTS_HARD_CAP = 250


def next_retry_delay_ms(
    retry: dict[str, Any], attempt: int, rng: random.Random | None = None
) -> int:
    """Delay before the attempt after ``attempt`` (1-based number of the attempt that failed).

    ``delay = round(min(max_timeout, r * min_timeout * factor ** (attempt - 1)))`` where ``r`` is
    uniform in [1, 2) when ``randomize`` is on (jitter only ever lengthens the delay), else 1.
    """
    options = {**DEFAULT_RETRY, **{k: v for k, v in retry.items() if v is not None}}
    r = (rng or random).uniform(1.0, 2.0) if options["randomize"] else 1.0
    raw = r * float(options["min_timeout_ms"]) * float(options["factor"]) ** (attempt - 1)
    return round(min(float(options["max_timeout_ms"]), raw))
