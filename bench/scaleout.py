"""``python -m bench.scaleout``: 2 API replicas + 3 worker replicas draining one environment.

One fresh database, two ``uvicorn`` API processes on it, three ``trigger worker`` replicas
(each given both API URLs, in a different order, so each talks to its own first). N runs are
bulk-enqueued with the workers stopped — most of them ``noop`` (no queue limit), one in ten
``limited`` (queue ``bench-limited``, concurrency limit 3) — with the environment's concurrency
limit lowered to ``--env-limit`` so that the limit binds (3 replicas × (concurrency + prefetch)
slots ask for far more). Then the workers start and drain.

Reported: runs/s (first completion to the N-th), the dequeue statement's p50/p99 (merged from
both APIs' ``trigger_dequeue_seconds`` histograms, interpolated inside a bucket), and the
concurrency actually observed. The observation is exact: a row trigger installed in the
benchmark database (never in the engine's schema) counts the environment's and the queue's
EXECUTING runs inside every leasing transaction, after its update; leases of one environment
are serialised by the environment row lock and completions only lower the count, so the
largest value recorded is the largest concurrency there ever was.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench import common
from bench.common import (
    DEFAULT_PG,
    PROJECT_DIR,
    Proc,
    Procs,
    check_postgres,
    free_port,
    fresh_database,
    machine_info,
    spawn,
    wait_until,
)

BATCH = 1000
METRICS_TOKEN = "bench-scaleout"
QUEUE_LIMIT = 3  # bench/project/trigger/bench_tasks.py, task "limited"

WATCH_SQL = """
CREATE TABLE bench_concurrency (env_running int NOT NULL, queue text NOT NULL,
                                queue_running int NOT NULL);
CREATE FUNCTION bench_watch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_concurrency
    SELECT (SELECT count(*) FROM runs WHERE environment_id = NEW.environment_id
                                        AND status = 'EXECUTING'),
           NEW.queue,
           (SELECT count(*) FROM runs WHERE environment_id = NEW.environment_id
                                        AND status = 'EXECUTING' AND queue = NEW.queue);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_watch AFTER UPDATE OF status ON runs FOR EACH ROW
    WHEN (NEW.status = 'EXECUTING' AND OLD.status IS DISTINCT FROM 'EXECUTING')
    EXECUTE FUNCTION bench_watch();
"""


def _histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of one Prometheus histogram (all label sets summed)."""
    out: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket{{"):
            labels, value = line.rsplit(" ", 1)
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            out[bound] = out.get(bound, 0.0) + float(value)
    return out


def quantile(buckets: dict[float, float], q: float) -> float:
    """Quantile from cumulative buckets, linear inside the bucket (as Prometheus does)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]] if bounds else 0
    if not total:
        return float("nan")
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-9)
        lower, below = bound, count
    return lower


class ScaleOut:
    def __init__(self, pg_url: str, log_dir: Path, apis: int, workers: int, concurrency: int,
                 env_limit: int) -> None:
        self.pg_url, self.log_dir = pg_url, log_dir
        self.n_apis, self.n_workers = apis, workers
        self.concurrency, self.env_limit = concurrency, env_limit
        self.procs = Procs()
        self.stack = contextlib.ExitStack()
        self.db_url = self.key = ""
        self.urls: list[str] = []
        self.apis: list[Proc] = []

    def __enter__(self) -> ScaleOut:
        try:
            self._setup()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.procs.stop_all()
        self.stack.close()

    def _setup(self) -> None:
        import psycopg

        from worker.engine.keys import create_project
        from worker.engine.migrate import migrate

        check_postgres(self.pg_url)
        self.db_url = self.stack.enter_context(fresh_database(self.pg_url, "bench_scale"))
        migrate(self.db_url)
        self.key = create_project(self.db_url, "bench")["dev"]
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            conn.execute(WATCH_SQL)
            conn.execute("UPDATE environments SET concurrency_limit = %s", (self.env_limit,))
        for i in range(self.n_apis):
            port = free_port()
            self.apis.append(self.procs.add(spawn(f"scale-api{i}", [
                sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
            "--http", common.HTTP_PROTOCOL,
                "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
                "--no-access-log"], self.log_dir, env={
                    "DATABASE_URL": self.db_url, "TRIGGER_METRICS_TOKEN": METRICS_TOKEN})))
            self.urls.append(f"http://127.0.0.1:{port}")
        for url, proc in zip(self.urls, self.apis, strict=True):
            wait_until(lambda url=url: _healthy(url), 60, f"{url}/healthz", interval=0.05,
                       proc=proc)
        # register the tasks (trigger refuses unknown ones): one worker, started and stopped
        first = self.start_worker(0)
        wait_until(lambda: "worker ready" in first.log(), 60, "the first registration",
                   interval=0.05, proc=first)
        first.stop()
        self.procs.items.remove(first)

    def start_worker(self, i: int) -> Proc:
        urls = self.urls[i % len(self.urls):] + self.urls[:i % len(self.urls)]
        return self.procs.add(spawn(f"scale-worker{i}", [
            sys.executable, "-m", "worker", "worker", "--project-dir", str(PROJECT_DIR),
            "--concurrency", str(self.concurrency)], self.log_dir, env={
                "TRIGGER_API_URL": ",".join(urls), "TRIGGER_SECRET_KEY": self.key},
            cwd=PROJECT_DIR))

    def enqueue(self, n: int) -> None:
        """n runs, one in ten on the limited queue, the batches spread over the replicas."""
        for b, lo in enumerate(range(0, n, BATCH)):
            url = self.urls[b % len(self.urls)]
            items = [{"task": "limited" if i % 10 == 0 else "noop", "payload": i}
                     for i in range(lo, min(n, lo + BATCH))]
            reply = httpx.post(f"{url}/api/v2/tasks/batch", json={"items": items}, timeout=60,
                               headers={"Authorization": f"Bearer {self.key}"})
            reply.raise_for_status()

    def dequeue_histogram(self) -> dict[float, float]:
        merged: dict[float, float] = {}
        for url in self.urls:
            text = httpx.get(f"{url}/metrics", timeout=30, headers={
                "Authorization": f"Bearer {METRICS_TOKEN}"}).text
            for bound, count in _histogram(text, "trigger_dequeue_seconds").items():
                merged[bound] = merged.get(bound, 0.0) + count
        return merged

    def run(self, n: int) -> dict[str, Any]:
        import psycopg

        self.enqueue(n)
        before = self.dequeue_histogram()
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            def done() -> int:
                row = conn.execute("SELECT count(*) FROM runs "
                                   "WHERE status = 'COMPLETED_SUCCESSFULLY'").fetchone()
                return int(row[0]) if row else 0

            workers = [self.start_worker(i) for i in range(self.n_workers)]
            first: tuple[float, int] | None = None
            deadline = time.monotonic() + max(180.0, n / 20)
            while True:
                count, now = done(), time.perf_counter()
                if first is None and count > 0:
                    first = (now, count)
                if count >= n:
                    break
                dead = [w for w in workers if not w.alive()]
                if dead:
                    raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].log()[-3000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {count}/{n} runs done before the deadline")
                time.sleep(0.01)
            assert first is not None
            rate = (n - first[1]) / (now - first[0]) if now > first[0] else float("nan")
            row = conn.execute(
                "SELECT max(env_running), max(queue_running) FILTER (WHERE queue = %s), "
                "count(*) FROM bench_concurrency", ("bench-limited",)).fetchone()
            assert row is not None
            per_worker = conn.execute(
                "SELECT count(DISTINCT worker_instance) FROM run_attempts").fetchone()
        after = self.dequeue_histogram()
        for w in workers:
            w.stop()
        hist = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
        return {"rate": rate, "env_max": row[0], "queue_max": row[1], "leases": row[2],
                "instances": per_worker[0] if per_worker else 0,
                "dequeue_p50_ms": quantile(hist, 0.50) * 1000,
                "dequeue_p99_ms": quantile(hist, 0.99) * 1000,
                "dequeue_calls": max(hist.values()) if hist else 0}


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def render(results: list[dict[str, Any]], args: argparse.Namespace,
           load: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    def med(key: str) -> float:
        values = sorted(r[key] for r in results)
        return values[len(values) // 2]

    limit_ok = all(r["env_max"] <= args.env_limit and (r["queue_max"] or 0) <= QUEUE_LIMIT
                   for r in results)
    reps = ", ".join(f"{r['rate']:,.0f}" for r in results)
    lines = [
        f"{args.apis} API replicas + {args.workers} worker replicas (--concurrency "
        f"{args.concurrency} each) on one Postgres; N = {args.n}; environment limit "
        f"{args.env_limit}, queue bench-limited limit {QUEUE_LIMIT}; nproc {os.cpu_count()}, "
        f"load average before {' '.join(f'{x:.2f}' for x in load[0])}, after "
        f"{' '.join(f'{x:.2f}' for x in load[1])}; repetitions: {len(results)}", "",
        "| metric | value |", "|---|---|",
        f"| drain (runs/s), median (each repetition) | {med('rate'):,.0f} ({reps}) |",
        f"| dequeue statement p50 / p99 (ms) | {med('dequeue_p50_ms'):.2f} / "
        f"{med('dequeue_p99_ms'):.2f} |",
        f"| dequeue statements | {med('dequeue_calls'):,.0f} |",
        f"| max EXECUTING in the environment (limit {args.env_limit}) | "
        f"{max(r['env_max'] for r in results)} |",
        f"| max EXECUTING on bench-limited (limit {QUEUE_LIMIT}) | "
        f"{max(r['queue_max'] or 0 for r in results)} |",
        f"| leases observed | {med('leases'):,.0f} |",
        f"| worker replicas that ran attempts | {min(r['instances'] for r in results)} |",
        f"| limits held exactly | {'yes' if limit_ok else '**NO**'} |",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--apis", type=int, default=2)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10, help="executors per worker")
    parser.add_argument("--env-limit", type=int, default=40)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="trigger-scaleout-"))
    load_before = machine_info()["load"]
    results = []
    for rep in range(args.reps):
        with ScaleOut(args.pg, log_dir, args.apis, args.workers, args.concurrency,
                      args.env_limit) as scale:
            results.append(scale.run(args.n))
        print(f"[scaleout] rep {rep + 1}/{args.reps}: {results[-1]}", file=sys.stderr)
    table = render(results, args, (load_before, machine_info()["load"]))
    print(table)
    print(f"\nprocess logs: {log_dir}")
    if args.out:
        args.out.write_text(table + "\n")
    limits_held = all(r["env_max"] <= args.env_limit and (r["queue_max"] or 0) <= QUEUE_LIMIT
                      for r in results)
    return 0 if limits_held else 1


if __name__ == "__main__":
    sys.exit(main())
