"""Guards around a dequeue (docs/protocol.md): the versions it names, and messages that can
always be delivered once their leases are committed."""

from __future__ import annotations

import logging

import orjson

from worker.common.protocol import DequeuedRun
from worker.engine.db import Pool
from worker.engine.errors import EngineError
from worker.engine.keys import Environment
from worker.engine.queries import Q

log = logging.getLogger(__name__)

#: version id -> its environment id (immutable once registered; bounded by the versions seen)
_VERSION_ENVS: dict[str, str] = {}


async def check_versions(pool: Pool, env: Environment, versions: list[str]) -> None:
    """Every version a dequeue names is registered in the key's own environment (else a dev
    worker could lock dev runs to a prod version)."""
    unknown = [v for v in versions if v not in _VERSION_ENVS]
    if unknown:
        async with pool.connection() as conn:
            cur = await conn.execute(Q.version_environments, {"version_ids": unknown})
            for row in await cur.fetchall():
                _VERSION_ENVS[str(row["id"])] = str(row["environment_id"])
    foreign = [v for v in versions if _VERSION_ENVS.get(v) != env.id]
    if foreign:
        raise EngineError(
            f"versions {foreign} are not registered in the {env.slug} environment: register "
            "with this key first (/engine/v1/worker/register)"
        )


def _renders(run: DequeuedRun) -> bool:
    try:
        orjson.dumps({"runs": [run.to_wire()]})  # as the response nests it
    except (TypeError, ValueError):
        return False
    return True


def deliverable(leased: list[DequeuedRun]) -> tuple[list[DequeuedRun], list[str]]:
    """The leases are committed: each run must now reach the worker. One that cannot be
    rendered (JSON stored before the limits of worker.common.limits) is sent without its
    metadata; the ids of any that still cannot are returned, for the caller to hand back."""
    ready: list[DequeuedRun] = []
    given_back: list[str] = []
    for run in leased:
        if not _renders(run):
            log.warning("run %s: stored metadata cannot be rendered; sent without it",
                        run.run_id)
            run = run.without_metadata()
            if not _renders(run):
                log.error("run %s cannot be sent to a worker; back to the queue", run.run_id)
                given_back.append(run.run_id)
                continue
        ready.append(run)
    return ready, given_back
