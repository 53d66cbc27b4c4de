"""``tags``: add tags to the current run from inside it (Trigger.dev's ``tags.add``).

``await tags.add("user_123")`` / ``await tags.add(["a", "b"])``: appended to the run's tags
(kept in order, duplicates dropped, at most 10 per run as at trigger time). As in Trigger.dev,
adding past the cap is logged (with the API's message naming the cap) and ignored: nothing is
added and the run goes on. Outside a run, pass ``run_id=``.
"""

from __future__ import annotations

from worker.sdk import transport
from worker.sdk.context import current_context
from worker.sdk.errors import ApiError
from worker.sdk.logger import logger
from worker.sdk.transport import path_segment


class Tags:
    async def add(self, tags: str | list[str], *, run_id: str | None = None) -> list[str] | None:
        """Add ``tags`` to the run; return all of its tags (None when refused and ignored)."""

        if run_id is None:
            ctx = current_context()
            if ctx is None:
                raise RuntimeError("tags.add outside a run needs run_id=")
            run_id = str(ctx.run.id)
        items = [tags] if isinstance(tags, str) else list(tags)
        try:
            data = await transport.json(
                "POST",
                f"/api/v1/runs/{path_segment(run_id)}/tags",
                json={"tags": items},
            )
        except ApiError as exc:
            if exc.status != 400:
                raise
            logger.error(f"tags.add ignored: {exc}", tags=items)
            return None
        return [str(tag) for tag in data["tags"]]


tags = Tags()
