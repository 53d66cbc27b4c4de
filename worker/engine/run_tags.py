"""Adding tags to a run after it was triggered (``tags.add`` inside a run,
docs/triggerdev-semantics.md, "Tags").

Tags keep their order, duplicates are dropped, and a run holds at most ``MAX_TAGS`` (as at
trigger time): adding past the cap is refused whole, naming the cap, so no tag is silently lost.
"""

from __future__ import annotations

from worker.engine.db import Pool, fetch_one
from worker.engine.errors import EngineError, NotFound
from worker.engine.keys import Environment
from worker.engine.models import MAX_TAG_LENGTH, MAX_TAGS
from worker.engine.queries import Q


def check_tags(tags: object) -> list[str]:
    items = [tags] if isinstance(tags, str) else tags
    if not isinstance(items, list) or not items:
        raise EngineError('body must be {"tags": ["tag", ...]} with at least one tag')
    for tag in items:
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_LENGTH:
            raise EngineError(f"each tag must be a string of 1..{MAX_TAG_LENGTH} characters")
    return list(dict.fromkeys(items))


async def add_tags(pool: Pool, env: Environment, run_id: str, tags: list[str]) -> list[str]:
    """Append ``tags`` (checked with :func:`check_tags`) to the run; return all its tags."""
    params = {"id": run_id, "environment_id": env.id}
    async with pool.connection() as conn, conn.transaction():
        row = await fetch_one(conn, Q.lock_run_tags, params)
        if row is None:
            raise NotFound(f"run {run_id!r} not found in the {env.slug} environment")
        current = list(row["tags"] or [])
        merged = current + [t for t in tags if t not in current]
        if len(merged) > MAX_TAGS:
            raise EngineError(
                f"a run has at most {MAX_TAGS} tags: it has {len(current)}, adding {tags} "
                f"would make {len(merged)}"
            )
        if merged != current:
            await conn.execute(Q.set_run_tags, {**params, "tags": merged})
    return merged
