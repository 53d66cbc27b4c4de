"""Our system: API (uvicorn) + engine on a fresh Postgres database + `trigger worker`."""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from bench import common
from bench.common import (
    PROJECT_DIR,
    Proc,
    Procs,
    check_postgres,
    free_port,
    fresh_database,
    memory_of,
    spawn,
    wait_until,
)
from bench.systems import Options

COMPLETED = "COMPLETED_SUCCESSFULLY"
BATCH = 1000  # the API's batch limit (worker.engine.models.MAX_BATCH_ITEMS)


def _http_protocol() -> list[str]:
    """The API's HTTP protocol (worker/api/http_protocol.py), when the checkout the processes
    run from has it (``python -m bench.ab`` compares checkouts)."""
    if (common.ROOT / "worker" / "api" / "http_protocol.py").exists():
        return ["--http", common.HTTP_PROTOCOL]
    return []


class Ours:
    name = "ours"
    label = "trigger-worker"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.procs = Procs()
        self._stack = contextlib.ExitStack()
        self.db_url = ""
        self.api_url = ""
        self.key = ""
        self.api: Proc | None = None
        self.http: httpx.Client | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def setup(self) -> None:
        check_postgres(self.opts.pg_url)
        import worker
        from worker.engine.keys import create_project

        # Bytecode as an install has it (pip compiles what it installs; Celery and
        # Procrastinate are installed): this checkout is an editable install and
        # PYTHONDONTWRITEBYTECODE may be set, so each interpreter would otherwise compile our
        # modules from source at every start (docs/cold-start.md).
        for folder in (Path(worker.__file__).parent, PROJECT_DIR):
            compileall.compile_dir(folder, quiet=1)
        from worker.engine.migrate import migrate

        self.db_url = self._stack.enter_context(fresh_database(self.opts.pg_url, "bench_ours"))
        migrate(self.db_url)
        self.key = create_project(self.db_url, "bench")["dev"]
        port = free_port()
        self.api = self.procs.add(spawn("ours-api", [
            sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
            *_http_protocol(),
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--no-access-log"], self.opts.log_dir, env={"DATABASE_URL": self.db_url}))
        self.api_url = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{self.api_url}/healthz", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(healthy, 30, "the API to answer /healthz", interval=0.05, proc=self.api)
        self.http = httpx.Client(base_url=self.api_url, timeout=30,
                                 headers={"Authorization": f"Bearer {self.key}"})
        # Register the tasks once (trigger refuses unknown tasks): start a worker, stop it.
        worker = self.start_worker()
        worker.stop()

    def teardown(self) -> None:
        if self.http:
            self.http.close()
        self.procs.stop_all()
        self._stack.close()

    def start_worker(self, wait_warm: bool = True) -> Proc:
        proc = self.procs.add(spawn("ours-worker", [
            sys.executable, "-m", "worker", "worker", "--project-dir", str(PROJECT_DIR),
            "--concurrency", str(self.opts.ours_concurrency)], self.opts.log_dir,
            env={"TRIGGER_API_URL": self.api_url, "TRIGGER_SECRET_KEY": self.key},
            cwd=PROJECT_DIR))
        if wait_warm:
            try:
                wait_until(lambda: self._warm(proc), 60, "the worker's executors to be warm",
                           interval=0.02, proc=proc)
            except BaseException:
                self._stop(proc)  # a worker left running would skew the next scenario
                raise
            time.sleep(0.2)  # forked executors connect to the supervisor's socket
        return proc

    def _warm(self, proc: Proc) -> bool:
        """The console says the pool is warm, or the zygote has forked every executor."""
        log = proc.log()
        if "'type': 'ready'" in log or "warm executor" in log:
            return True
        import psutil

        try:
            zygotes = psutil.Process(proc.popen.pid).children()
            executors = [c for z in zygotes for c in z.children()]
        except psutil.Error:
            return False
        return len(executors) >= self.opts.ours_concurrency

    def _stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs.items:
            self.procs.items.remove(proc)

    def _count_completed(self, conn: Any) -> int:
        row = conn.execute("SELECT count(*) FROM runs WHERE status = %s", (COMPLETED,)).fetchone()
        return int(row[0])

    def _status(self, conn: Any, run_id: str) -> str | None:
        row = conn.execute("SELECT status FROM runs WHERE id = %s", (run_id,)).fetchone()
        return row[0] if row else None

    def trigger(self, task_id: str, payload: Any) -> str:
        assert self.http
        reply = self.http.post(f"/api/v1/tasks/{task_id}/trigger", json={"payload": payload})
        reply.raise_for_status()
        return str(reply.json()["id"])

    # --- scenarios ----------------------------------------------------------------------

    def throughput(self, n: int) -> tuple[float, float]:
        """Enqueue n no-op runs with the batch API (worker stopped), then drain them."""
        import psycopg

        assert self.http
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            base = self._count_completed(conn)
            started = time.perf_counter()
            for lo in range(0, n, BATCH):
                items = [{"payload": i} for i in range(lo, min(n, lo + BATCH))]
                reply = self.http.post("/api/v1/tasks/noop/batch", json={"items": items})
                reply.raise_for_status()
            enqueue_rate = n / (time.perf_counter() - started)
            worker = self.start_worker(wait_warm=False)
            try:
                drain_rate = drain(lambda: self._count_completed(conn) - base, n, worker)
            finally:
                self._stop(worker)
        return enqueue_rate, drain_rate

    def latency(self, count: int) -> tuple[list[float], list[float]]:
        """Sequential triggers on an idle warm worker, through the SDK as a user's code does:
        ``tasks.trigger`` then ``runs.poll`` (one ``GET /api/v3/runs/{id}?waitMs=N``
        long-poll, answered when the run ends)."""
        worker = self.start_worker()
        try:
            return asyncio.run(self._latency(count))
        finally:
            self._stop(worker)

    async def _latency(self, count: int) -> tuple[list[float], list[float]]:
        from worker.sdk import transport

        transport.default.configure(api_url=self.api_url, secret_key=self.key)
        try:
            for i in range(10):  # warm-up, not measured
                await self._one_latency(i)
            to_start, to_result = [], []
            for i in range(count):
                s, r = await self._one_latency(i)
                to_start.append(s)
                to_result.append(r)
            return to_start, to_result
        finally:
            await transport.default.aclose()

    async def _one_latency(self, i: int) -> tuple[float, float]:
        import worker

        t0 = time.time()
        handle = await worker.tasks.trigger("stamp", i)
        run = await worker.runs.poll(handle, timeout=10)
        t_result = time.time()
        if run.status != "COMPLETED":
            raise RuntimeError(f"latency run {handle.id} ended {run.status}: {run}")
        return (run.output["t"] - t0) * 1000, (t_result - t0) * 1000

    def cold_start(self) -> float:
        """One run queued; launch `trigger worker`; seconds until that run is COMPLETED."""
        import psycopg

        run_id = self.trigger("noop", "cold")
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            t0 = time.perf_counter()
            worker = self.start_worker(wait_warm=False)
            try:
                wait_until(lambda: self._status(conn, run_id) == COMPLETED, 60,
                           "the cold-start run", interval=0.002, proc=worker)
                return time.perf_counter() - t0
            finally:
                self._stop(worker)

    def memory(self) -> dict[str, list[dict[str, float]]]:
        """USS/PSS of the supervisor, the zygote and each idle executor."""
        import psutil

        worker = self.start_worker()
        try:
            time.sleep(1.0)  # idle
            sup = psutil.Process(worker.popen.pid)
            zygotes = sup.children()
            executors = [c for z in zygotes for c in z.children()]
            return {
                "supervisor": [memory_of(sup.pid)],
                "zygote": [memory_of(z.pid) for z in zygotes],
                "executor": [memory_of(e.pid) for e in executors],
            }
        finally:
            self._stop(worker)

    def warm_vs_cold(self, warm_runs: int, cold_runs: int) -> tuple[list[float], list[float]]:
        """ms per execution: a warm pre-forked executor vs a fresh interpreter per run."""
        warm = asyncio.run(_warm_executions(warm_runs))
        cold = []
        code = ("import asyncio, sys; sys.path.insert(0, sys.argv[1]); "
                "from trigger.bench_tasks import noop_fn; asyncio.run(noop_fn(1))")
        for _ in range(cold_runs):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", code, str(PROJECT_DIR)], check=True,
                           cwd=str(PROJECT_DIR), timeout=60)
            cold.append((time.perf_counter() - t0) * 1000)
        return warm, cold


def drain(count: Any, n: int, worker: Proc, timeout: float | None = None) -> float:
    """Runs/s from the first observed completion to the n-th (polled every 10 ms)."""
    deadline = time.monotonic() + (timeout or max(120.0, n / 20))
    first: tuple[float, int] | None = None
    while True:
        done = count()
        now = time.perf_counter()
        if first is None and done > 0:
            first = (now, done)
        if done >= n:
            assert first is not None
            if now == first[0]:
                return float("nan")
            return (n - first[1]) / (now - first[0])
        if not worker.alive():
            raise RuntimeError(f"{worker.name} exited during the drain:\n{worker.log()[-3000:]}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{worker.name}: only {done}/{n} done before the deadline")
        time.sleep(0.01)


async def _warm_executions(count: int) -> list[float]:
    """Drive one warm executor of the bench project directly through the runtime's pool."""
    import os
    import tempfile

    from worker.common.protocol import DequeuedRun
    from worker.runtime.pool import ExecutorServer, Pool
    from worker.runtime.zygote_process import ZygoteProcess

    tmp = tempfile.mkdtemp(prefix="bench-warm-")
    server = ExecutorServer(os.path.join(tmp, "x.sock"))
    await server.start()
    holder: list[Pool] = []
    zygote = ZygoteProcess(PROJECT_DIR, server.path,
                           lambda pid, c, s: holder[0].handle_exit(pid, c, s) if holder else None)
    await zygote.start()
    pool = Pool(zygote, server, size=1, version_id="bench", version="bench",
                on_log=lambda frame: None, on_change=lambda: None,
                max_runs_per_process=count + 100)
    holder.append(pool)
    pool.fill()
    try:
        deadline = time.monotonic() + 30
        while not pool.idle():
            if time.monotonic() > deadline:
                raise TimeoutError("the warm executor did not connect in 30 s")
            await asyncio.sleep(0.01)
        ex = pool.idle()[0]
        times = []
        for i in range(count + 10):
            run = DequeuedRun.from_wire(_run_message(i))
            t0 = time.perf_counter()
            frame = await asyncio.wait_for(pool.execute(ex, run), 10)
            elapsed = (time.perf_counter() - t0) * 1000
            if not frame["completion"].get("ok"):
                raise RuntimeError(f"warm execution failed: {frame}")
            if i >= 10:  # the first ones warm caches up
                times.append(elapsed)
        return times
    finally:
        await pool.close()
        await server.close()


def _run_message(i: int) -> dict[str, Any]:
    """A dequeued-run message as the engine sends it (docs/protocol.md)."""
    now = "2026-01-01T00:00:00+00:00"
    run_id = f"run_bench{i}"
    return {
        "run_id": run_id, "attempt_number": 1, "task_id": "noop", "version_id": "bench",
        "version": "bench", "payload": str(i), "payload_type": "application/json",
        "max_attempts": 1, "retry": None, "max_duration": 60, "machine": "small-1x",
        "lease_expires_at": now, "is_final_attempt": True,
        "ctx": {"run": {"id": run_id, "tags": [], "created_at": now, "started_at": now,
                        "idempotency_key": None, "max_attempts": 1, "version": "bench",
                        "max_duration": 60, "priority": 0, "is_test": False,
                        "parent_task_run_id": None, "root_task_run_id": None},
                "attempt": {"number": 1, "started_at": now},
                "task": {"id": "noop", "file_path": "trigger/bench_tasks.py"},
                "queue": {"name": "task/noop"},
                "environment": {"id": "bench", "slug": "dev", "type": "DEVELOPMENT"},
                "project": {"id": "bench", "ref": "bench"},
                "machine": {"name": "small-1x", "cpu": 1, "memory": 0.5}, "batch": None},
    }
