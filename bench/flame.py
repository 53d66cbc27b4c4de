"""``python -m bench.flame``: py-spy flame graphs of the API and the supervisor under drain.

Bulk-enqueues N no-op runs (worker stopped), launches one worker replica, and records both
processes with ``py-spy record`` while they drain (``--idle`` includes waiting threads; off by
default, so the graphs show where CPU goes). SVGs are written to ``--out`` (default
docs/benchmarks/), named api-drain.svg, supervisor-drain.svg and executor-drain.svg (one
executor of the pool).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from bench.common import DEFAULT_PG, ROOT, machine_info, wait_until
from bench.systems import Options
from bench.systems.ours import BATCH, Ours


def record(pid: int, out: Path, seconds: float, rate: int,
           fmt: str = "flamegraph") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["py-spy", "record", "--pid", str(pid), "--duration", str(int(seconds)),
         "--rate", str(rate), "--format", fmt, "--output", str(out), "--nonblocking"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.flame", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--raw", action="store_true",
                        help="collapsed stacks (.txt, for scripts) instead of SVG")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    if not shutil.which("py-spy"):
        print("py-spy is missing: pip install -e '.[bench]'", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    opts = Options(n=args.n, latency_n=0, pg_url=args.pg, redis_url="",
                   log_dir=Path(tempfile.mkdtemp(prefix="trigger-flame-")),
                   ours_concurrency=args.concurrency)
    ours = Ours(opts)
    ours.setup()
    try:
        assert ours.http and ours.api
        for lo in range(0, args.n, BATCH):
            items = [{"payload": i} for i in range(lo, min(args.n, lo + BATCH))]
            ours.http.post("/api/v1/tasks/noop/batch", json={"items": items}).raise_for_status()
        worker = ours.start_worker(wait_warm=False)
        with psycopg.connect(ours.db_url, autocommit=True) as conn:
            # past the supervisor's start-up: the graphs show the drain
            wait_until(lambda: ours._count_completed(conn) > 0, 60, "the drain to start",
                       interval=0.01, proc=worker)
        # past the first requests too: each router builds its route table on first use
        time.sleep(1.5)
        load = machine_info()["load"]
        fmt, ext = ("raw", "txt") if args.raw else ("flamegraph", "svg")
        import psutil

        executors = [c for c in psutil.Process(worker.popen.pid).children(recursive=True)
                     if c.ppid() != worker.popen.pid]  # the zygote's children
        names = (args.out / f"api-drain.{ext}", args.out / f"supervisor-drain.{ext}",
                 args.out / f"executor-drain.{ext}")
        spies = [record(ours.api.popen.pid, names[0], args.seconds, args.rate, fmt),
                 record(worker.popen.pid, names[1], args.seconds, args.rate, fmt)]
        if executors:  # one of them: they all run the same code
            spies.append(record(executors[0].pid, names[2], args.seconds, args.rate, fmt))
        for spy in spies:
            _, err = spy.communicate(timeout=args.seconds + 60)
            if spy.returncode:
                print(err.decode(errors="replace"), file=sys.stderr)
        ours._stop(worker)
    finally:
        ours.teardown()
    print(f"load average {' '.join(f'{x:.2f}' for x in load)}; wrote {', '.join(map(str, names))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
