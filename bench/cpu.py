"""``python -m bench.cpu``: CPU time per run, by process, while one worker drains N runs.

On a CPU-bound box the drain rate is the cores divided by the CPU a run costs, summed over
the processes it crosses; unlike wall-clock latencies, these per-run costs hardly move with
what else the machine runs, so they compare two versions of the code fairly on a busy box
and feed the on-paper scale-out estimate (docs/benchmarks.md, "Scale-out").

Processes: the API (uvicorn), the supervisor, its zygote and executors, and the Postgres
backends connected to the benchmark database (found in pg_stat_activity; Postgres' own
background writers are not counted). Each process's user+system time is read before and after
the drain (the window from the first to the last completion).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_PG, machine_info
from bench.systems import Options
from bench.systems.ours import BATCH, Ours


def _cpu(pids: list[int]) -> dict[int, float]:
    import psutil

    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def measure(ours: Ours, n: int) -> dict[str, Any]:
    import psutil
    import psycopg

    assert ours.http and ours.api
    with psycopg.connect(ours.db_url, autocommit=True) as conn:
        base = ours._count_completed(conn)
    for lo in range(0, n, BATCH):
        items = [{"payload": i} for i in range(lo, min(n, lo + BATCH))]
        ours.http.post("/api/v1/tasks/noop/batch", json={"items": items}).raise_for_status()
    with psycopg.connect(ours.db_url, autocommit=True) as conn:
        dbname = conn.info.dbname
        own = conn.info.backend_pid
        worker = ours.start_worker(wait_warm=False)
        try:
            def done() -> int:
                return ours._count_completed(conn) - base

            deadline = time.monotonic() + max(120, n / 20)
            while done() == 0:
                if time.monotonic() > deadline or not worker.alive():
                    raise RuntimeError(f"the drain did not start:\n{worker.log()[-2000:]}")
                time.sleep(0.005)
            first = done()

            def groups() -> dict[str, list[int]]:
                sup = psutil.Process(worker.popen.pid)
                rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                                    "AND pid <> %s", (dbname, own)).fetchall()
                return {"API": [ours.api.popen.pid], "supervisor": [sup.pid],
                        "zygote + executors": [c.pid for c in sup.children(recursive=True)],
                        "Postgres backends": [int(r[0]) for r in rows]}

            start_groups = groups()
            t0 = time.perf_counter()
            before = {k: _cpu(v) for k, v in start_groups.items()}
            while (count := done()) < n:
                if time.monotonic() > deadline or not worker.alive():
                    raise RuntimeError(f"the drain stalled at {count}/{n}")
                time.sleep(0.005)
            elapsed = time.perf_counter() - t0
            end_groups = groups()
            after = {k: _cpu(end_groups[k] + start_groups[k]) for k in end_groups}
        finally:
            ours._stop(worker)
    runs = n - first
    per_run = {k: sum(after[k].get(p, 0.0) - before[k].get(p, 0.0) for p in after[k])
               * 1000 / runs for k in after}
    return {"rate": runs / elapsed, "per_run_ms": per_run}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    opts = Options(n=args.n, latency_n=0, pg_url=args.pg, redis_url="",
                   log_dir=Path(tempfile.mkdtemp(prefix="trigger-cpu-")),
                   ours_concurrency=args.concurrency)
    load = machine_info()["load"]
    ours = Ours(opts)
    ours.setup()
    results = []
    try:
        for _ in range(args.reps):
            results.append(measure(ours, args.n))
    finally:
        ours.teardown()
    keys = list(results[0]["per_run_ms"])
    print(f"N = {args.n}, --concurrency {args.concurrency}, load average before "
          f"{' '.join(f'{x:.2f}' for x in load)}, after "
          f"{' '.join(f'{x:.2f}' for x in machine_info()['load'])}\n")
    print("| CPU per run (ms) | " + " | ".join(f"rep {i + 1}" for i in range(len(results)))
          + " |")
    print("|---|" + "---:|" * len(results))
    for key in keys:
        print(f"| {key} | " + " | ".join(f"{r['per_run_ms'][key]:.3f}" for r in results) + " |")
    print("| **total** | " + " | ".join(f"{sum(r['per_run_ms'].values()):.3f}" for r in results)
          + " |")
    print("| drain (runs/s) | " + " | ".join(f"{r['rate']:,.0f}" for r in results) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
