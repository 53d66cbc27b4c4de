"""Celery 5 with Redis (broker and result backend), prefork pool, concurrency 2."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from bench.common import Missing, Proc, Procs, check_redis, memory_of, spawn, wait_until
from bench.systems import Options
from bench.systems.ours import drain

BROKER_DB, BACKEND_DB = 9, 10
MARKER = "trigger-bench:owner"


class CeleryPeer:
    name = "celery"
    label = "Celery"

    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.procs = Procs()
        base = opts.redis_url.rstrip("/")
        self.broker_url = f"{base}/{BROKER_DB}"
        self.backend_url = f"{base}/{BACKEND_DB}"
        self.env = {"BENCH_REDIS_BROKER": self.broker_url, "BENCH_REDIS_BACKEND": self.backend_url}

    def setup(self) -> None:
        try:
            import celery  # noqa: F401
        except ImportError:
            raise Missing("Celery is not installed: pip install -e '.[bench]'") from None
        check_redis(self.opts.redis_url)
        import redis

        self.broker = redis.Redis.from_url(self.broker_url)
        self.backend = redis.Redis.from_url(self.backend_url)
        for db, client in ((BROKER_DB, self.broker), (BACKEND_DB, self.backend)):
            if client.dbsize() and not client.exists(MARKER) and db == BROKER_DB:
                raise Missing(f"Redis DB {db} holds keys that are not the benchmark's; "
                              "the harness flushes DBs 9 and 10, so free them first")
        os.environ.update(self.env)  # the app reads them at import
        from bench.peers import celery_app

        self.app = celery_app
        self.flush()

    def flush(self) -> None:
        self.broker.flushdb()
        self.backend.flushdb()
        self.broker.set(MARKER, "1")

    def teardown(self) -> None:
        self.procs.stop_all()
        for client in (getattr(self, "broker", None), getattr(self, "backend", None)):
            if client is not None:
                client.flushdb()

    def start_worker(self, wait_warm: bool = True) -> Proc:
        proc = self.procs.add(spawn("celery-worker", [
            sys.executable, "-m", "celery", "-A", "bench.peers.celery_app", "worker",
            "-P", "prefork", "-c", "2", "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat"],
            self.opts.log_dir, env=self.env))
        if wait_warm:
            try:
                wait_until(lambda: " ready." in proc.log(), 60, "the Celery worker to be ready",
                           interval=0.02, proc=proc)
            except BaseException:
                self._stop(proc)  # a worker left running would skew the next scenario
                raise
            time.sleep(0.2)
        return proc

    def _stop(self, proc: Proc) -> None:
        proc.stop()
        if proc in self.procs.items:
            self.procs.items.remove(proc)

    def throughput(self, n: int) -> tuple[float, float]:
        from celery import group

        self.flush()
        started = time.perf_counter()
        group(self.app.noop.s(i) for i in range(n)).apply_async()
        enqueue_rate = n / (time.perf_counter() - started)
        worker = self.start_worker(wait_warm=False)
        try:
            return enqueue_rate, drain(lambda: int(self.backend.dbsize()), n, worker)
        finally:
            self._stop(worker)

    def latency(self, count: int) -> tuple[list[float], list[float]]:
        self.flush()
        worker = self.start_worker()
        try:
            for i in range(10):
                self._one(i)
            pairs = [self._one(i) for i in range(count)]
        finally:
            self._stop(worker)
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _one(self, i: int) -> tuple[float, float]:
        t0 = time.time()
        result = self.app.stamp.delay(i)
        out: Any = result.get(timeout=10)  # the Redis backend waits on pub/sub
        t_result = time.time()
        return (out["t"] - t0) * 1000, (t_result - t0) * 1000

    def cold_start(self) -> float:
        self.flush()
        result = self.app.noop.delay("cold")
        t0 = time.perf_counter()
        worker = self.start_worker(wait_warm=False)
        try:
            wait_until(result.ready, 60, "the Celery cold-start task", interval=0.002, proc=worker)
            return time.perf_counter() - t0
        finally:
            self._stop(worker)

    def memory(self) -> dict[str, list[dict[str, float]]]:
        import psutil

        worker = self.start_worker()
        try:
            time.sleep(1.0)
            parent = psutil.Process(worker.popen.pid)
            return {"supervisor": [memory_of(parent.pid)],
                    "executor": [memory_of(c.pid) for c in parent.children()]}
        finally:
            self._stop(worker)
