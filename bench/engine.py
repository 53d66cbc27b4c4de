"""Engine benchmark: lease + complete throughput at 10 k and at 1 M queued runs.

Protocol-level workers (async httpx, docs/protocol.md) drain a fixed number of runs from a
queue that holds 10 k, then 1 M runs, through the real API process and Postgres. The cost per
run must stay flat as the queue grows (the dequeue reads sub-queue heads from an index), so
the report gives runs/s at each depth and the ratio. Also prints EXPLAIN of the head scan.

    python bench/engine.py [--drain 5000] [--depths 10000,1000000] [--workers 4] [--batch 50]

Uses DATABASE_URL's server (or the embedded Postgres) with a fresh database, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import _server_url, _with_database, start_api, stop_process  # noqa: E402
from worker.engine.keys import create_project  # noqa: E402
from worker.engine.migrate import migrate  # noqa: E402

HEAD_SCAN = """
EXPLAIN (ANALYZE, BUFFERS, COSTS OFF)
SELECT r.id, r.score FROM runs r
WHERE r.environment_id = %(env)s AND r.status = 'PENDING'
  AND r.queue = 'task/noop' AND r.concurrency_key = ''
  AND (r.version_id = ANY(%(versions)s::uuid[])
       OR (r.version_id IS NULL AND r.task_id = ANY(ARRAY['noop'])))
  AND (r.expires_at IS NULL OR r.expires_at > now())
ORDER BY r.score, r.id LIMIT 50
"""


async def _worker_loop(client: httpx.AsyncClient, instance: str, version: str, batch: int,
                       quota: list[int]) -> None:
    while quota[0] > 0:
        reply = await client.post("/engine/v1/worker/dequeue", json={
            "instance_id": instance, "versions": [version], "max_runs": batch, "wait_ms": 0})
        runs = reply.json()["runs"]
        if not runs:
            return
        quota[0] -= len(runs)
        await client.post("/engine/v1/worker/complete", json={
            "instance_id": instance,
            "completions": [{"run_id": r["run_id"], "attempt_number": r["attempt_number"],
                             "ok": True, "output": "null"} for r in runs],
        })


async def drain(url: str, key: str, version: str, count: int, workers: int, batch: int) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
        quota = [count]
        started = time.perf_counter()
        await asyncio.gather(*(
            _worker_loop(client, str(uuid.uuid4()), version, batch, quota)
            for _ in range(workers)
        ))
        elapsed = time.perf_counter() - started
    return (count - max(quota[0], 0)) / elapsed


def fill(db: str, env_id: str, total: int) -> None:
    """Top the queue up to ``total`` PENDING runs with one INSERT … SELECT."""
    with psycopg.connect(db, autocommit=True) as conn:
        (have,) = conn.execute("SELECT count(*) FROM runs WHERE status = 'PENDING'").fetchone()  # type: ignore[misc]
        missing = total - have
        if missing > 0:
            conn.execute(
                "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, score) "
                "SELECT 'run_bench' || md5(random()::text || g::text), %s, 'noop', 'PENDING', "
                "'null', 'task/noop', (extract(epoch FROM now()) * 1000)::bigint + g "
                "FROM generate_series(1, %s) g",
                (env_id, missing),
            )
        conn.execute("VACUUM ANALYZE runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain", type=int, default=5000)
    parser.add_argument("--depths", default="10000,1000000")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    depths = [int(d) for d in args.depths.split(",")]

    server_url, server = _server_url()
    name = f"trigger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = _with_database(server_url, name)
    api = None
    try:
        migrate(db)
        keys = create_project(db, "bench")
        log = Path(f"/tmp/{name}-api.log")
        api = start_api(db, log)
        client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {keys['dev']}"})
        version = client.post("/engine/v1/worker/register", json={
            "instance_id": str(uuid.uuid4()), "content_hash": "bench",
            "tasks": [{"id": "noop", "queue": {"name": "task/noop"}}]}).json()["version_id"]
        with psycopg.connect(db) as conn:
            (env_id,) = conn.execute("SELECT environment_id FROM api_keys LIMIT 1").fetchone()  # type: ignore[misc]
        print(f"nproc={os.cpu_count()} load={os.getloadavg()[0]:.2f} drain={args.drain} "
              f"workers={args.workers} batch={args.batch}")
        results: dict[int, list[float]] = {}
        for depth in depths:
            results[depth] = []
            for _ in range(args.repeat):
                fill(db, str(env_id), depth)
                rate = asyncio.run(drain(api.url, keys["dev"], version, args.drain,
                                         args.workers, args.batch))
                results[depth].append(rate)
            with psycopg.connect(db) as conn:
                plan = conn.execute(HEAD_SCAN, {"env": env_id, "versions": [version]}).fetchall()
            print(f"\nqueue depth {depth:,}: head scan plan")
            print("\n".join("  " + row[0] for row in plan))
        print("\n| queued runs | lease+complete runs/s (median) | min–max |")
        print("|---:|---:|---:|")
        for depth, rates in results.items():
            print(f"| {depth:,} | {statistics.median(rates):,.0f} | "
                  f"{min(rates):,.0f}–{max(rates):,.0f} |")
        if len(depths) >= 2:
            small = statistics.median(results[depths[0]])
            big = statistics.median(results[depths[-1]])
            print(f"\ncost per run at {depths[-1]:,} / at {depths[0]:,}: {small / big:.2f}× "
                  "(target ≤ 1.5×)")
    finally:
        if api is not None:
            stop_process(api.process)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        del server


if __name__ == "__main__":
    main()
