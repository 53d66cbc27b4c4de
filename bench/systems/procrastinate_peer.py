"""Procrastinate 3 on a fresh Postgres database: 2 worker processes (async concurrency each)."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import (
    Missing,
    Proc,
    Procs,
    check_postgres,
    fresh_database,
    memory_of,
    spawn,
    wait_until,
)
from bench.systems import Options
from bench.systems.ours import drain

APP = "bench.peers.procrastinate_app.app"


class ProcrastinatePeer:
    name = "procrastinate"
    label = "Procrastinate"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.procs = Procs()
        self._db = None
        self.dsn = ""

    def setup(self) -> None:
        try:
            import procrastinate  # noqa: F401
        except ImportError:
            raise Missing("Procrastinate is not installed: pip install -e '.[bench]'") from None
        check_postgres(self.opts.pg_url)
        self._db = fresh_database(self.opts.pg_url, "bench_pc")
        self.dsn = self._db.__enter__()
        os.environ["BENCH_PROCRASTINATE_DSN"] = self.dsn
        from bench.peers import procrastinate_app

        procrastinate_app.app.connector._pool_args["conninfo"] = self.dsn  # type: ignore[attr-defined]
        self.mod = procrastinate_app
        with self.mod.app.open():
            self.mod.app.schema_manager.apply_schema()

    def teardown(self) -> None:
        self.procs.stop_all()
        if self._db is not None:
            self._db.__exit__(None, None, None)

    def start_workers(self, wait_warm: bool = True) -> list[Proc]:
        procs = [self.procs.add(spawn(f"procrastinate-worker{i}", [
            sys.executable, "-m", "procrastinate", f"--app={APP}", "worker",
            "-c", str(self.opts.procrastinate_concurrency)],
            self.opts.log_dir, env={"BENCH_PROCRASTINATE_DSN": self.dsn})) for i in range(2)]
        if wait_warm:
            try:
                for proc in procs:
                    wait_until(lambda p=proc: "starting worker" in p.log().lower(), 60,
                               "a Procrastinate worker to start", interval=0.02, proc=proc)
            except BaseException:
                self._stop(procs)  # a worker left running would skew the next scenario
                raise
            time.sleep(0.3)
        return procs

    def _stop(self, procs: list[Proc]) -> None:
        for proc in procs:
            proc.stop()
            if proc in self.procs.items:
                self.procs.items.remove(proc)

    def _sql(self, query: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def throughput(self, n: int) -> tuple[float, float]:
        import psycopg

        base = self._sql("SELECT count(*) FROM procrastinate_jobs WHERE status='succeeded'")[0][0]

        async def enqueue() -> float:
            async with self.mod.app.open_async():
                t0 = time.perf_counter()
                await self.mod.noop.batch_defer_async(*({"x": i} for i in range(n)))
                return n / (time.perf_counter() - t0)

        enqueue_rate = asyncio.run(enqueue())
        workers = self.start_workers(wait_warm=False)
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                def done() -> int:
                    row = conn.execute("SELECT count(*) FROM procrastinate_jobs "
                                       "WHERE status='succeeded'").fetchone()
                    return int(row[0]) - base
                return enqueue_rate, drain(done, n, _AnyAlive(workers))
        finally:
            self._stop(workers)

    def latency(self, count: int) -> tuple[list[float], list[float]]:
        workers = self.start_workers()
        tmp = Path(tempfile.mkdtemp(prefix="bench-pc-"))
        try:
            return asyncio.run(self._latency(count, tmp))
        finally:
            self._stop(workers)

    async def _latency(self, count: int, tmp: Path) -> tuple[list[float], list[float]]:
        import psycopg

        to_start, to_result = [], []
        async with self.mod.app.open_async(), await psycopg.AsyncConnection.connect(
                self.dsn, autocommit=True) as conn:
            for i in range(count + 10):
                path = tmp / f"s{i}"
                t0 = time.time()
                job_id = await self.mod.stamp.defer_async(x=i, path=str(path))
                deadline = time.monotonic() + 10
                while True:  # no result backend: the caller polls the job's status
                    row = await (await conn.execute(
                        "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)
                    )).fetchone()
                    if row and row[0] == "succeeded":
                        t_result = time.time()
                        break
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"procrastinate job {job_id} still {row}")
                    await asyncio.sleep(0.0005)
                if i >= 10:
                    to_start.append((float(path.read_text()) - t0) * 1000)
                    to_result.append((t_result - t0) * 1000)
        return to_start, to_result

    def cold_start(self) -> float:
        async def defer() -> int:
            async with self.mod.app.open_async():
                return int(await self.mod.noop.defer_async(x="cold"))

        job_id = asyncio.run(defer())
        t0 = time.perf_counter()
        workers = self.start_workers(wait_warm=False)
        try:
            wait_until(lambda: self._sql("SELECT status FROM procrastinate_jobs WHERE id=%s",
                                         (job_id,))[0][0] == "succeeded",
                       60, "the Procrastinate cold-start job", interval=0.002)
            return time.perf_counter() - t0
        finally:
            self._stop(workers)

    def memory(self) -> dict[str, list[dict[str, float]]]:
        workers = self.start_workers()
        try:
            time.sleep(1.0)
            return {"executor": [memory_of(w.popen.pid) for w in workers]}
        finally:
            self._stop(workers)


class _AnyAlive:
    """Adapts a list of worker processes to drain()'s single-process liveness check."""

    def __init__(self, procs: list[Proc]) -> None:
        self.procs = procs
        self.name = "procrastinate workers"

    def alive(self) -> bool:
        return all(p.alive() for p in self.procs)

    def log(self) -> str:
        return "\n".join(p.log()[-1500:] for p in self.procs)
