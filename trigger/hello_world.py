"""The smallest task: log the payload and return a greeting."""

from __future__ import annotations

from typing import Any

from worker import logger, task

__all__ = ["hello_world"]


@task(id="hello-world", max_duration=60)
async def hello_world(payload: dict[str, Any] | None, ctx: Any) -> dict[str, Any]:
    name = (payload or {}).get("name", "world")
    logger.info("Task started", payload=payload, run_id=ctx.run.id, attempt=ctx.attempt.number)
    greeting = f"Hello, {name}!"
    logger.info("Task finished", greeting=greeting)
    return {"success": True, "message": greeting}
