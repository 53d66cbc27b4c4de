"""Registering a code version's task manifest (docs/protocol.md, ``/register``)."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg.types.json import Jsonb

from worker.common.conventions import task_queue_name
from worker.common.protocol import Wire
from worker.engine import schedules
from worker.engine.db import Pool
from worker.engine.errors import EngineError
from worker.engine.keys import Environment
from worker.engine.manifest import check_manifest
from worker.engine.queries import Q


@dataclass(frozen=True)
class RegisteredVersion:
    version_id: str
    version: str


async def register(
    pool: Pool,
    env: Environment,
    instance_id: str,
    content_hash: str,
    tasks: list[Wire],
    metadata: Wire,
) -> RegisteredVersion:
    """Record a code version (deduplicated by content hash) and its task definitions."""
    check_manifest(tasks)
    ids = [t.get("id") for t in tasks]
    if any(not isinstance(i, str) or not i for i in ids):
        raise EngineError("every task in the manifest needs a non-empty string id")
    if len(set(ids)) != len(ids):
        raise EngineError("the manifest lists a task id twice")
    params = {"environment_id": env.id, "content_hash": content_hash}
    async with pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(Q.insert_version, params)).fetchone()
        if row is None:  # same code registered before (or concurrently): reuse it
            row = await (await conn.execute(Q.find_version, params)).fetchone()
        assert row is not None
        version_id = str(row["id"])
        queues: dict[str, int | None] = {}
        for definition in tasks:
            queue = definition.get("queue") or {}
            name = queue.get("name") or task_queue_name(definition["id"])
            definition["queue"] = {
                "name": name,
                "concurrency_limit": queue.get("concurrency_limit"),
            }
            # a queue shared by several tasks: the tightest declared limit wins
            limits = [
                v for v in (queues.get(name), queue.get("concurrency_limit")) if v is not None
            ]
            queues[name] = min(limits) if limits else None
            task_params = {
                "version_id": version_id,
                "task_id": definition["id"],
                "definition": Jsonb(definition),
                "environment_id": env.id,
            }
            await conn.execute(Q.insert_version_task, task_params)
            await conn.execute(Q.upsert_task, task_params)
        await schedules.sync_declarative(conn, env, version_id, tasks)
        await conn.execute(
            Q.upsert_worker,
            {
                "instance_id": instance_id,
                "environment_id": env.id,
                "version_id": version_id,
                "metadata": Jsonb(metadata),
            },
        )
        for name, limit in queues.items():
            await conn.execute(
                Q.upsert_queue,
                {"environment_id": env.id, "name": name, "concurrency_limit": limit},
            )
        # Runs triggered while no worker had their task can go now.
        await conn.execute(Q.release_version_waits, {"environment_id": env.id, "task_ids": ids})
        await conn.execute(Q.notify_runs, {"environment_id": env.id})
    return RegisteredVersion(version_id, str(row["version"]))
