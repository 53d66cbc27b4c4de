"""Fails on its first attempt and succeeds on the retry: shows retries with backoff."""

from __future__ import annotations

from typing import Any

from worker import logger, task

__all__ = ["flaky"]


@task(
    id="flaky",
    retry={"max_attempts": 3, "min_timeout_ms": 500, "max_timeout_ms": 2000, "factor": 2},
)
async def flaky(payload: dict[str, Any] | None, ctx: Any) -> dict[str, Any]:
    attempt = ctx.attempt.number
    logger.info("Flaky attempt", attempt=attempt)
    if attempt == 1:
        raise RuntimeError("first attempt always fails (this is expected: watch it retry)")
    return {"succeeded_on_attempt": attempt}
