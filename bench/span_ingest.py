"""``python -m bench.span_ingest``: what storing attempt spans costs the API and Postgres.

One API process (uvicorn) on a fresh database, N runs triggered, then ``POST /otel/v1/traces``
requests of B attempt spans each (the executor's own encoding, worker/runtime/otlp_wire.py:
the attributes and flags every attempt span has), one at a time, for each batch size B. For
each B: the API process's and the Postgres backends' CPU per span (schedstat of every thread:
load-robust) and the client's wall-clock p50 per request. Under a drain at ``--concurrency
10`` an executor posts a batch per second of what it ran in that second (tens to hundreds).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from bench.api_cpu import _runtime
from bench.common import DEFAULT_PG, Procs, fresh_database, start_api


def _request(runs: list[tuple[str, str, str]], resource: bytes) -> bytes:
    from worker.runtime import otlp_wire

    now = time.time_ns()
    spans = []
    for i, (run_id, trace_id, span_id) in enumerate(runs):
        attributes = {"ctx.run.id": run_id, "ctx.attempt.number": 1, "ctx.task.id": "noop",
                      "trigger.span.kind": "attempt", "trigger.resumed": False}
        spans.append(otlp_wire.span(
            bytes.fromhex(trace_id), os.urandom(8), bytes.fromhex(span_id), "Attempt 1", 1,
            now - 1_000_000 + i, now + i, attributes, [], [], 0, None, 0x300))
    return otlp_wire.resource_spans(resource, otlp_wire.text_field(0x0A, "trigger.dev"), spans)


def main(argv: list[str] | None = None) -> int:
    import httpx
    import psycopg

    parser = argparse.ArgumentParser(prog="python -m bench.span_ingest", description=__doc__)
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--batches", default="1,10,100", help="spans per request")
    parser.add_argument("--spans", type=int, default=6000, help="spans sent per batch size")
    parser.add_argument("--profile", default="",
                        help="py-spy the API during the last batch size: collapsed stacks here")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    from worker.engine.keys import create_project
    from worker.engine.migrate import migrate
    from worker.runtime import otlp_wire

    log_dir = Path(tempfile.mkdtemp(prefix="bench-span-ingest-"))
    procs = Procs()
    with fresh_database(args.pg, "bench_span_ingest") as db_url:
        migrate(db_url)
        key = create_project(db_url, "bench")["dev"]
        try:
            api, url = start_api(procs, db_url, log_dir)
            http = httpx.Client(base_url=url, timeout=30,
                                headers={"Authorization": f"Bearer {key}"})
            http.post("/engine/v1/worker/register", json={
                "instance_id": str(uuid.uuid4()), "content_hash": uuid.uuid4().hex,
                "tasks": [{"id": "noop", "queue": {"name": "task/noop"}}]}).raise_for_status()
            for lo in range(0, args.runs, 500):
                items = [{"payload": i} for i in range(lo, min(args.runs, lo + 500))]
                http.post("/api/v1/tasks/noop/batch", json={"items": items}).raise_for_status()
            db = psycopg.connect(db_url, autocommit=True)
            runs = [(r[0], r[1], r[2]) for r in db.execute(
                "SELECT id, trace_id, span_id FROM runs ORDER BY id").fetchall()]
            resource = otlp_wire.key_values(0x0A, {"service.name": "bench",
                                                   "service.instance.id": "x" * 36})
            headers = {"content-type": "application/x-protobuf"}
            print(f"runs {len(runs)}; load {os.getloadavg()[0]:.2f}\n")
            print("| spans per request | API CPU µs/span | Postgres CPU µs/span "
                  "| wall p50 ms/request |")
            print("|---:|---:|---:|---:|")
            sizes = [int(b) for b in args.batches.split(",")]
            for size in sizes:
                pg = [int(r[0]) for r in db.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                    "pid <> pg_backend_pid()", (db.info.dbname,)).fetchall()]
                bodies = [_request([runs[(i + j) % len(runs)] for j in range(size)], resource)
                          for i in range(0, args.spans, size)]
                for body in bodies[:5]:  # warm up (and first connections)
                    http.post("/otel/v1/traces", content=body, headers=headers)
                walls = []
                spy = None
                if args.profile and size == sizes[-1]:
                    import subprocess

                    spy = subprocess.Popen(["py-spy", "record", "-p", str(api.popen.pid), "-f",
                                            "raw", "-o", args.profile, "-r", "1000", "--gil"],
                                           stdout=subprocess.DEVNULL)
                    time.sleep(1)
                a0, p0 = _runtime([api.popen.pid]), _runtime(pg)
                for body in bodies:
                    t = time.perf_counter()
                    http.post("/otel/v1/traces", content=body,
                              headers=headers).raise_for_status()
                    walls.append(time.perf_counter() - t)
                a1, p1 = _runtime([api.popen.pid]), _runtime(pg)
                if spy is not None:
                    import signal

                    spy.send_signal(signal.SIGINT)
                    spy.wait()
                spans = len(bodies) * size
                print(f"| {size} | {(a1 - a0) / 1000 / spans:.1f} | "
                      f"{(p1 - p0) / 1000 / spans:.1f} | "
                      f"{statistics.median(walls) * 1000:.2f} |")
            db.close()
            http.close()
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
