"""Deployments (``trigger deploy``): a code version registered from the CLI, then promoted.

Registering records the version and its task definitions exactly as a worker's registration
would (same content hash, so the workers running the deployed image reuse the version), but
changes nothing current. Promoting makes the version's definitions the environment's current
ones (trigger-time schema checks, queue limits), marks the deployment ``DEPLOYED`` and queues
the ``DEPLOYMENT_SUCCESS`` alerts. Promotion is idempotent.
"""

from __future__ import annotations

from typing import Any

from psycopg.types.json import Jsonb

from worker.engine.db import Pool, Row, fetch_all, fetch_one
from worker.engine.errors import EngineError, NotFound
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.queries import Q


def present(row: Row) -> Row:
    def iso(value: Any) -> str | None:
        return value.isoformat() if value is not None else None

    return {"id": row["id"], "status": row["status"], "version": row.get("version"),
            "image": row.get("image"), "createdAt": iso(row.get("created_at")),
            "promotedAt": iso(row.get("promoted_at"))}


async def register(pool: Pool, env: Environment, content_hash: str, tasks: list[dict[str, Any]],
                   image: str | None) -> Row:
    ids = [t.get("id") for t in tasks]
    if not ids or any(not isinstance(i, str) or not i for i in ids):
        raise EngineError("a deployment needs tasks, each with a non-empty string id")
    if len(set(ids)) != len(ids):
        raise EngineError("the manifest lists a task id twice")
    params = {"environment_id": env.id, "content_hash": content_hash}
    async with pool.connection() as conn, conn.transaction():
        row = await fetch_one(conn, Q.insert_version, params)
        if row is None:
            row = await fetch_one(conn, Q.find_version, params)
        assert row is not None
        version_id, version = str(row["id"]), row["version"]
        for definition in tasks:
            await conn.execute(Q.insert_version_task, {
                "version_id": version_id, "task_id": definition["id"],
                "definition": Jsonb(definition)})
        created = await fetch_one(
            conn,
            Q.insert_deployment,
            {
                "id": new_id("deployment"),
                "environment_id": env.id,
                "version_id": version_id,
                "image": image,
            },
        )
    assert created is not None
    return present({**created, "version": version})


async def retrieve(pool: Pool, env: Environment, deployment_id: str) -> Row:
    async with pool.connection() as conn:
        row = await fetch_one(
            conn,
            Q.get_deployment,
            {"id": deployment_id, "environment_id": env.id},
        )
    if row is None:
        raise NotFound(f"deployment {deployment_id!r} not found in the {env.slug} environment")
    return present(row)


async def promote(pool: Pool, env: Environment, deployment_id: str) -> Row:
    async with pool.connection() as conn, conn.transaction():
        row = await fetch_one(
            conn,
            Q.lock_deployment,
            {"id": deployment_id, "environment_id": env.id},
        )
        if row is None:
            raise NotFound(f"deployment {deployment_id!r} not found in the {env.slug} environment")
        if row["status"] == "DEPLOYED":
            return await retrieve(pool, env, deployment_id)
        version_id = str(row["version_id"])
        tasks = await fetch_all(conn, Q.list_version_tasks, {"version_id": version_id})
        for task in tasks:
            definition = task["definition"]
            await conn.execute(Q.upsert_task, {
                "environment_id": env.id, "task_id": task["task_id"],
                "version_id": version_id, "definition": Jsonb(definition)})
            queue = definition.get("queue") or {}
            await conn.execute(Q.upsert_queue, {
                "environment_id": env.id,
                "name": queue.get("name") or f"task/{task['task_id']}",
                "concurrency_limit": queue.get("concurrency_limit")})
        done = await fetch_one(conn, Q.mark_deployment_deployed, {"id": deployment_id})
        assert done is not None
        body = {"deploymentId": deployment_id, "version": row["version"],
                "environment": env.slug, "project": env.project_ref,
                "tasks": sorted(t["task_id"] for t in tasks)}
        await conn.execute(Q.queue_deploy_alerts, {
            "deployment_id": deployment_id, "environment_id": env.id, "body": Jsonb(body)})
    return present({**done, "version": row["version"]})


async def current_tasks(pool: Pool, env: Environment) -> list[Row]:
    """The environment's current task definitions (the last version registered or promoted):
    ``task_id``, ``version``, ``definition``."""
    async with pool.connection() as conn:
        return await fetch_all(conn, Q.list_env_tasks, {"environment_id": env.id})
