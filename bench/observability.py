"""Observability numbers (docs/benchmarks.md): trace query time, /metrics scrape time at a deep
queue, tracing overhead on the drain.

    python bench/observability.py trace   [--spans 1000]
    python bench/observability.py metrics [--depths 100000,1000000]
    python bench/observability.py overhead [--n 2000] [--reps 1]

``trace``: one run with N spans in ``run_spans`` (a tree 4 levels deep, with events and a log
line per 10 spans); times ``GET /api/v1/runs/{id}/trace`` through the real API (median of 20).
``metrics``: fills the queue to each depth (``bench/engine.py``'s fill) and times ``GET
/metrics`` with its cache off (every scrape queries Postgres; median of 5), plus the plan of
the biggest query. ``overhead``: ``python -m bench --systems ours --scenarios throughput``
with tracing on, then off (``TRIGGER_TELEMETRY=off``), and prints both drain rows.
Uses DATABASE_URL's server (or the embedded Postgres) with a fresh database, dropped after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.engine import fill  # noqa: E402
from tests.conftest import _server_url, _with_database, start_api, stop_process  # noqa: E402
from worker.engine.keys import create_project  # noqa: E402
from worker.engine.migrate import migrate  # noqa: E402

TOKEN = "bench-metrics-token"


@contextmanager
def database() -> Iterator[str]:
    server_url, server = _server_url()
    name = f"trigger_obs_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        db = _with_database(server_url, name)
        migrate(db)
        yield db
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        del server


def _timed(fn: Any, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        out.append((time.perf_counter() - started) * 1000)
    return out


def bench_trace(spans: int) -> None:
    with database() as db:
        keys = create_project(db, "bench")
        with psycopg.connect(db, autocommit=True) as conn:
            (env_id,) = conn.execute("SELECT environment_id FROM api_keys LIMIT 1").fetchone()  # type: ignore[misc]
            run_id, trace_id, run_span = "run_tracebench", uuid.uuid4().hex, uuid.uuid4().hex[:16]
            conn.execute(
                "INSERT INTO runs (id, environment_id, task_id, status, payload, queue, score, "
                "trace_id, span_id, completed_at) VALUES (%s, %s, 'noop', "
                "'COMPLETED_SUCCESSFULLY', 'null', 'task/noop', 0, %s, %s, now())",
                (run_id, env_id, trace_id, run_span))
            start = datetime.now(UTC) - timedelta(seconds=10)
            ids = [uuid.uuid4().hex[:16] for _ in range(spans)]
            rows = []
            for i, span_id in enumerate(ids):
                # a tree: span i's parent is span i // 4 (the first under the run's span)
                parent = run_span if i == 0 else ids[(i - 1) // 4]
                begin = start + timedelta(milliseconds=i)
                rows.append((trace_id, span_id, parent, run_id, env_id, f"span {i}",
                             begin, begin + timedelta(milliseconds=5),
                             orjson.dumps({"ctx.run.id": run_id, "i": i, "k": "v" * 50}).decode(),
                             orjson.dumps([{"name": "e", "time": begin.isoformat(),
                                            "attributes": {}}]).decode()))
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO run_spans (trace_id, span_id, parent_span_id, run_id, "
                    "environment_id, name, start_time, end_time, attributes, events) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)", rows)
                cur.executemany(
                    "INSERT INTO run_logs (run_id, attempt_number, level, message, logged_at, "
                    "span_id) VALUES (%s, 1, 'info', 'line', now(), %s)",
                    [(run_id, s) for s in ids[::10]])
            conn.execute("VACUUM ANALYZE run_spans")
        api = start_api(db, Path(f"/tmp/obs-bench-{uuid.uuid4().hex[:6]}.log"))
        try:
            client = httpx.Client(base_url=api.url,
                                  headers={"Authorization": f"Bearer {keys['dev']}"}, timeout=60)
            reply = client.get(f"/api/v1/runs/{run_id}/trace")
            assert reply.status_code == 200 and reply.json()["trace"]["spanCount"] == spans + 1
            times = _timed(lambda: client.get(f"/api/v1/runs/{run_id}/trace"), 20)
            size = len(reply.content)
            print(f"| trace of a run with {spans:,} spans | GET /trace median "
                  f"{statistics.median(times):.1f} ms (min {min(times):.1f}, max "
                  f"{max(times):.1f}) | {size / 1024:.0f} KiB |")
        finally:
            stop_process(api.process)


def bench_metrics(depths: list[int]) -> None:
    with database() as db:
        create_project(db, "bench")
        with psycopg.connect(db) as conn:
            (env_id,) = conn.execute("SELECT environment_id FROM api_keys LIMIT 1").fetchone()  # type: ignore[misc]
        api = start_api(db, Path(f"/tmp/obs-bench-{uuid.uuid4().hex[:6]}.log"),
                        TRIGGER_METRICS_TOKEN=TOKEN, TRIGGER_METRICS_CACHE_SECONDS="0")
        try:
            client = httpx.Client(base_url=api.url, timeout=120,
                                  headers={"Authorization": f"Bearer {TOKEN}"})
            for depth in depths:
                started = time.perf_counter()
                fill(db, str(env_id), depth)
                filled = time.perf_counter() - started
                depth_line = next(line for line in client.get("/metrics").text.splitlines()
                                  if line.startswith("trigger_queue_depth{"))
                assert float(depth_line.rpartition(" ")[2]) == depth, depth_line
                times = _timed(lambda: client.get("/metrics"), 5)
                print(f"| /metrics at {depth:,} queued runs | median "
                      f"{statistics.median(times):.0f} ms (min {min(times):.0f}, max "
                      f"{max(times):.0f}); cached scrapes ~0 | filled in {filled:.0f} s |")
            from worker.engine.queries import Q

            with psycopg.connect(db) as conn:
                plan = conn.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
                                    + Q.metrics_queued).fetchall()
            print("\n".join("  " + row[0] for row in plan))
        finally:
            stop_process(api.process)


def bench_overhead(n: int, reps: int) -> None:
    for label, extra in (("tracing on", {}), ("tracing off", {"TRIGGER_TELEMETRY": "off"})):
        done = subprocess.run(
            [sys.executable, "-m", "bench", "--systems", "ours", "--scenarios", "throughput",
             "--n", str(n), "--reps", str(reps)],
            capture_output=True, text=True, cwd=ROOT, env={**os.environ, **extra}, timeout=1800)
        rows = [line for line in done.stdout.splitlines() if "drain" in line.lower()]
        print(f"{label}: " + (" / ".join(rows) or done.stdout[-2000:] + done.stderr[-2000:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("trace", "metrics", "overhead"))
    parser.add_argument("--spans", type=int, default=1000)
    parser.add_argument("--depths", default="100000,1000000")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=1)
    args = parser.parse_args()
    print(f"nproc={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
    if args.what == "trace":
        bench_trace(args.spans)
    elif args.what == "metrics":
        bench_metrics([int(d) for d in args.depths.split(",")])
    else:
        bench_overhead(args.n, args.reps)


if __name__ == "__main__":
    main()
