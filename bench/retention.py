"""Retention benchmark: delete many old finished runs while workers drain a queue beside it.

Fills a fresh database with ``--old`` finished runs completed 40 days ago (each with an attempt
and two log lines) and ``--queued`` PENDING runs, then drains ``--drain`` runs through the real
API without retention, then again while the retention sweep (worker/engine/services/retention.py)
deletes the old runs, and prints both drain rates and the deletion rate.

    python bench/retention.py [--old 1000000] [--queued 40000] [--drain 10000]

Uses DATABASE_URL's server (or the embedded Postgres) with a fresh database, dropped after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import drain  # noqa: E402
from tests.conftest import _server_url, _with_database, start_api, stop_process  # noqa: E402
from worker.engine.db import open_pool  # noqa: E402
from worker.engine.keys import create_project  # noqa: E402
from worker.engine.migrate import migrate  # noqa: E402
from worker.engine.services.retention import RetentionSettings, SweepResult, sweep  # noqa: E402


def seed(db: str, env_id: str, old: int, queued: int) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, score, "
            "output, created_at, completed_at) "
            "SELECT 'run_old' || g, %s, 'noop', 'COMPLETED_SUCCESSFULLY', 'null', 'task/noop', g, "
            "'\"done\"', now() - interval '41 days', now() - interval '40 days' "
            "FROM generate_series(1, %s) g", (env_id, old))
        conn.execute(
            "INSERT INTO run_attempts (run_id, number, status, worker_instance, completed_at) "
            "SELECT 'run_old' || g, 1, 'COMPLETED', gen_random_uuid(), now() - interval '40 days' "
            "FROM generate_series(1, %s) g", (old,))
        conn.execute(
            "INSERT INTO run_logs (run_id, attempt_number, level, message, logged_at) "
            "SELECT 'run_old' || (g / 2 + 1), 1, 'info', 'a log line of an old run', now() "
            "FROM generate_series(0, %s) g", (2 * old - 1,))
        conn.execute(
            "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, score) "
            "SELECT 'run_q' || g, %s, 'noop', 'PENDING', 'null', 'task/noop', "
            "(extract(epoch FROM now()) * 1000)::bigint + g FROM generate_series(1, %s) g",
            (env_id, queued))
        conn.execute("VACUUM ANALYZE")


def sweep_in_thread(db: str, batch: int, out: list[tuple[SweepResult, float]]) -> threading.Thread:
    async def go() -> None:
        pool = await open_pool(db, max_size=2)
        started = time.perf_counter()
        result = await sweep(pool, RetentionSettings(days=30, batch=batch))
        out.append((result, time.perf_counter() - started))
        await pool.close()

    thread = threading.Thread(target=lambda: asyncio.run(go()))
    thread.start()
    return thread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", type=int, default=1_000_000)
    parser.add_argument("--queued", type=int, default=40_000)
    parser.add_argument("--drain", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500, help="retention batch (runs)")
    args = parser.parse_args()

    server_url, server = _server_url()
    name = f"trigger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = _with_database(server_url, name)
    api = None
    try:
        migrate(db)
        keys = create_project(db, "bench")
        api = start_api(db, Path(f"/tmp/{name}-api.log"), TRIGGER_RETENTION_DAYS="0")
        client = httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {keys['dev']}"})
        registered = client.post("/engine/v1/worker/register", json={
            "instance_id": str(uuid.uuid4()), "content_hash": "bench",
            "tasks": [{"id": "noop", "queue": {"name": "task/noop"}}]}).json()
        version, env_id = registered["version_id"], registered["environment"]["id"]
        t0 = time.perf_counter()
        seed(db, str(env_id), args.old, args.queued)
        print(f"nproc={os.cpu_count()} load={os.getloadavg()[0]:.2f} seeded {args.old:,} old "
              f"runs (+attempts, 2 logs each) and {args.queued:,} queued in "
              f"{time.perf_counter() - t0:.0f} s")

        alone = asyncio.run(drain(api.url, keys["dev"], version, args.drain, args.workers, 50))
        print(f"drain without retention: {alone:,.0f} runs/s")
        out: list[tuple[SweepResult, float]] = []
        thread = sweep_in_thread(db, args.batch, out)
        time.sleep(1)  # the sweep is under way
        during = asyncio.run(drain(api.url, keys["dev"], version, args.drain, args.workers, 50))
        print(f"drain during retention:  {during:,.0f} runs/s ({during / alone:.0%} of alone)")
        thread.join()
        result, took = out[0]
        with psycopg.connect(db) as conn:
            (left,) = conn.execute("SELECT count(*) FROM runs WHERE id LIKE 'run_old%%'").fetchone()  # type: ignore[misc]
        print(f"retention deleted {result.runs:,} runs in {took:.0f} s "
              f"({result.runs / took:,.0f} runs/s, batches of {args.batch}); {left} old left")
        print("\n| old runs | drain alone | drain during retention | deletion |")
        print("|---:|---:|---:|---:|")
        print(f"| {args.old:,} | {alone:,.0f}/s | {during:,.0f}/s | {result.runs / took:,.0f}/s |")
    finally:
        if api is not None:
            stop_process(api.process)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        del server


if __name__ == "__main__":
    main()
