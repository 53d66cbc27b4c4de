"""Dashboard runs list at 1 M runs: how long the list and each filter take (docs/benchmarks.md).

Builds the runs with a single ``INSERT ... SELECT generate_series`` in a fresh database, then
times (1) the list query the page runs (``worker.engine.runs.list_runs``, 51 rows) and (2) the
whole page over HTTP (a real API process, a logged-in session), for each filter.

    python -m bench.dashboard_list              # 1 M runs, ≈ 2 min on 2 cores
    python -m bench.dashboard_list --runs 100000 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psycopg

from bench import common
from bench.engine import _server_url, _with_database
from worker.api.dashboard.access import create_login_link
from worker.engine import runs
from worker.engine.db import open_pool
from worker.engine.keys import Environment, create_project
from worker.engine.migrate import migrate

FILL = """
INSERT INTO runs (id, environment_id, task_id, status, payload, queue, score, tags,
                  version_id, batch_id, created_at, updated_at, completed_at)
SELECT 'run_' || lpad(g::text, 12, '0'),
       %(env)s::uuid,
       'task-' || (g %% 20),
       CASE WHEN g %% 1000 = 0 THEN 'PENDING'
            WHEN g %% 17 = 1 THEN 'COMPLETED_WITH_ERRORS'
            WHEN g %% 997 = 3 THEN 'CANCELED'
            ELSE 'COMPLETED_SUCCESSFULLY' END,
       '{}', 'task/task-' || (g %% 20), g,
       CASE WHEN g %% 2 = 0 THEN ARRAY['customer-' || (g %% 1000), 'common']
            ELSE ARRAY['customer-' || (g %% 1000)] END,
       (%(versions)s::uuid[])[1 + g %% 3],
       CASE WHEN g %% 5000 < 10 THEN 'batch_' || (g / 5000) END,
       now() - make_interval(secs => (%(total)s - g) * 2.5),
       now(), CASE WHEN g %% 1000 = 0 THEN NULL ELSE now() END
FROM generate_series(1, %(total)s) g
"""

FILTERS: list[tuple[str, dict[str, str]]] = [
    ("no filter (first page)", {}),
    ("keyset page in the middle", {"after": "MIDDLE"}),
    ("status FAILED (6 %)", {"status": "FAILED"}),
    ("status QUEUED (0.1 %)", {"status": "QUEUED"}),
    ("task (5 %)", {"task": "task-7"}),
    ("tag, rare (0.1 %)", {"tag": "customer-42"}),
    ("tag, common (50 %)", {"tag": "common"}),
    ("version (33 %)", {"version": "v2"}),
    ("queue (5 %)", {"queue": "task/task-3"}),
    ("batch (10 runs)", {"batch": "batch_7"}),
    ("created in a 1 h window, 10 days ago", {"from": "FROM", "to": "TO"}),
    ("status FAILED + task", {"status": "FAILED", "task": "task-1"}),
    ("status QUEUED + rare tag", {"status": "QUEUED", "tag": "customer-0"}),
]


def fill(db: str, env_id: str, total: int) -> None:
    with psycopg.connect(db, autocommit=True) as conn:
        versions = []
        for name in ("v1", "v2", "v3"):
            row = conn.execute(
                "INSERT INTO worker_versions (environment_id, version, content_hash) "
                "VALUES (%s, %s, %s) RETURNING id", (env_id, name, name)).fetchone()
            assert row is not None
            versions.append(row[0])
        conn.execute("INSERT INTO batches (id, environment_id, run_count) "
                     "SELECT 'batch_' || g, %s, 10 FROM generate_series(0, %s) g",
                     (env_id, total // 5000))
        started = time.perf_counter()
        conn.execute(FILL, {"env": env_id, "versions": versions, "total": total})
        conn.execute("VACUUM ANALYZE runs")
        print(f"filled {total:,} runs in {time.perf_counter() - started:.0f} s", flush=True)


def _params(query: dict[str, str], total: int) -> dict[str, str]:
    from datetime import UTC, datetime, timedelta

    out = dict(query)
    if out.get("after") == "MIDDLE":
        out["after"] = f"run_{total // 2:012d}"
    if out.get("from") == "FROM":
        start = datetime.now(UTC) - timedelta(days=10)
        out["from"] = start.strftime("%Y-%m-%dT%H:%M")
        out["to"] = (start + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    return out


async def time_queries(db: str, env: Environment, total: int, repeat: int) -> list[float]:
    """Median ms of the list query per filter (what the page's handler runs)."""
    from worker.api.dashboard.routes_runs import _csv, _time
    from worker.common.statuses import INTERNAL_STATUSES

    pool = await open_pool(db, max_size=2)
    medians = []
    try:
        for _, query in FILTERS:
            q = _params(query, total)
            after = None
            if "after" in q:
                row = await runs.retrieve(pool, env, q["after"])
                after = (row["created_at"], row["id"])
            statuses = INTERNAL_STATUSES[q["status"]] if "status" in q else None
            took = []
            for _ in range(repeat):
                started = time.perf_counter()
                await runs.list_runs(
                    pool, env, statuses=statuses, task_ids=_csv(q.get("task")),
                    tags=_csv(q.get("tag")), versions=_csv(q.get("version")),
                    queues=_csv(q.get("queue")), batch_id=q.get("batch"),
                    created_from=_time("from", q.get("from")), created_to=_time("to", q.get("to")),
                    after=after, limit=51)
                took.append((time.perf_counter() - started) * 1000)
            medians.append(statistics.median(took))
    finally:
        await pool.close()
    return medians


def time_pages(url: str, link: str, project: str, total: int, repeat: int) -> list[float]:
    medians = []
    with httpx.Client(timeout=60) as client:
        client.get(link)  # log in (the session cookie is Secure: sent by hand over http)
        cookie = next(c for c in client.cookies.jar if c.name == "trigger_session")
        headers = {"Cookie": f"trigger_session={cookie.value}"}
        for _, query in FILTERS:
            took = []
            for _ in range(repeat):
                started = time.perf_counter()
                page = client.get(f"{url}/dashboard/{project}/dev/runs",
                                  params=_params(query, total), headers=headers)
                took.append((time.perf_counter() - started) * 1000)
                assert page.status_code == 200, (query, page.status_code, page.text[:300])
            medians.append(statistics.median(took))
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    server_url, server = _server_url()
    name = f"trigger_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = _with_database(server_url, name)
    api = None
    try:
        migrate(db)
        create_project(db, "bench")
        with psycopg.connect(db) as conn:
            row = conn.execute(
                "SELECT e.id, e.concurrency_limit, p.id FROM environments e JOIN projects p "
                "ON p.id = e.project_id WHERE p.ref = 'bench' AND e.slug = 'dev'").fetchone()
        assert row is not None
        env = Environment(str(row[0]), "dev", "DEVELOPMENT", row[1], str(row[2]), "bench")
        fill(db, env.id, args.runs)
        queries = asyncio.run(time_queries(db, env, args.runs, args.repeat))
        port = 3900 + os.getpid() % 90
        log = Path(f"/tmp/{name}-api.log")
        api = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
            "--http", common.HTTP_PROTOCOL,
             "--port", str(port), "--log-level", "warning"],
            env={**os.environ, "DATABASE_URL": db}, stdout=log.open("wb"),
            stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        pages = time_pages(url, create_login_link(db, url), "bench", args.runs, args.repeat)
        print(f"\n| filter ({args.runs:,} runs) | list query, ms | whole page over HTTP, ms |")
        print("|---|---:|---:|")
        for (label, _), q_ms, p_ms in zip(FILTERS, queries, pages, strict=True):
            print(f"| {label} | {q_ms:.1f} | {p_ms:.1f} |")
    finally:
        if api is not None:
            api.terminate()
            api.wait(10)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        del server


if __name__ == "__main__":
    main()
