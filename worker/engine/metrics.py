"""Prometheus metrics of the engine (docs/api.md, "Metrics").

Two kinds:

* counters and histograms of this API process, updated where things happen (dequeue,
  completion, checkpoint, rescue): :data:`REGISTRY`. They count from the process's start; with
  several API processes, scrape each (or sum them in Prometheus);
* gauges read from Postgres at scrape time (:func:`gauges`): runs per status, queue and task,
  queue depth and oldest queued age, executing vs limits, connected workers and free slots.
  Every query reads an index (worker/engine/sql/queries/metrics.sql); the result is cached for
  ``TRIGGER_METRICS_CACHE_SECONDS`` (default 5) so that frequent scrapes, or several
  Prometheus servers, do not multiply the work.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from worker.engine.db import Pool, Row, fetch_all
from worker.engine.queries import Q

REGISTRY = CollectorRegistry(auto_describe=True)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800)

DEQUEUE_SECONDS = Histogram(
    "trigger_dequeue_seconds", "Time of one dequeue query (leasing runs), seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    registry=REGISTRY)
START_LATENCY_SECONDS = Histogram(
    "trigger_run_start_latency_seconds",
    "From trigger (or the end of a delay) to the first attempt's start, seconds",
    buckets=_LATENCY_BUCKETS, registry=REGISTRY)
DEQUEUED = Counter("trigger_runs_dequeued", "Runs leased to workers", ["resumed"],
                   registry=REGISTRY)
COMPLETIONS = Counter(
    "trigger_attempt_completions",
    "Attempt completions by outcome: completed, failed, retried, crashed, timed_out, oom",
    ["outcome"], registry=REGISTRY)
CHECKPOINTS = Counter("trigger_checkpoints", "Runs that checkpointed at a wait",
                      registry=REGISTRY)
RESCUES = Counter("trigger_rescues", "Runs whose lease expired and were rescued",
                  registry=REGISTRY)
SCRAPE_SECONDS = Histogram("trigger_metrics_query_seconds",
                           "Time of the database queries behind one /metrics snapshot",
                           registry=REGISTRY)

_CRASH_CODES = frozenset({"TASK_RUN_CRASHED", "TASK_PROCESS_EXITED_WITH_NON_ZERO_CODE",
                          "TASK_PROCESS_SIGKILL_TIMEOUT", "TASK_PROCESS_SIGSEGV",
                          "TASK_PROCESS_SIGTERM", "TASK_RUN_HEARTBEAT_TIMEOUT"})


def completion_outcome(completion: Any, result: dict[str, Any]) -> str:
    """The outcome label of one attempt completion and the engine's answer to it."""
    ok = completion.get("ok") if isinstance(completion, dict) else getattr(completion, "ok", None)
    if ok:
        return "completed"
    error = (completion.get("error") if isinstance(completion, dict)
             else getattr(completion, "error", None)) or {}
    code = str(error.get("code") or "") if isinstance(error, dict) else ""
    if result.get("status") not in ("COMPLETED", "FAILED", "CRASHED", "SYSTEM_FAILURE",
                                    "TIMED_OUT", "CANCELED", "EXPIRED"):
        return "retried"
    if code == "TASK_PROCESS_OOM_KILLED":
        return "oom"
    if code == "MAX_DURATION_EXCEEDED" or result.get("status") == "TIMED_OUT":
        return "timed_out"
    if code in _CRASH_CODES or result.get("status") == "CRASHED":
        return "crashed"
    return "failed"


def observe_dequeued(runs: list[Row]) -> None:
    """Count leased runs; a first attempt's start latency (trigger → now)."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    for run in runs:
        resumed = bool(run.get("resumed"))
        DEQUEUED.labels(resumed=str(resumed).lower()).inc()
        created = ((run.get("ctx") or {}).get("run") or {}).get("created_at")
        if not resumed and run.get("attempt_number") == 1 and created:
            START_LATENCY_SECONDS.observe(max(0.0, (now - datetime.fromisoformat(created))
                                              .total_seconds()))


@dataclass
class _Snapshot:
    taken: float = 0.0
    families: list[Any] = field(default_factory=list)


_cache = _Snapshot()
_lock = asyncio.Lock()


async def gauges(pool: Pool, cache_seconds: float) -> list[Any]:
    """The database gauges, reused for ``cache_seconds`` (one refresh at a time)."""
    async with _lock:
        if _cache.families and time.monotonic() - _cache.taken < cache_seconds:
            return _cache.families
        started = time.perf_counter()
        families = await _read(pool)
        SCRAPE_SECONDS.observe(time.perf_counter() - started)
        _cache.families, _cache.taken = families, time.monotonic()
        return families


async def _read(pool: Pool) -> list[Any]:
    from worker.engine.run_creator import LIVE_WORKER_SECONDS

    async with pool.connection() as conn:
        queued = await fetch_all(conn, Q.metrics_queued)
        live = await fetch_all(conn, Q.metrics_live)
        limits = await fetch_all(conn, Q.metrics_limits)
        workers = await fetch_all(conn, Q.metrics_workers, {"live_seconds": LIVE_WORKER_SECONDS})
    env_labels = ["project", "environment"]
    runs = GaugeMetricFamily("trigger_runs", "Live runs by status, queue and task",
                             labels=[*env_labels, "status", "queue", "task"])
    depth = GaugeMetricFamily("trigger_queue_depth", "Queued (PENDING) runs per queue",
                              labels=[*env_labels, "queue"])
    oldest = GaugeMetricFamily("trigger_queue_oldest_age_seconds",
                               "Age of the oldest queued run per queue (priority-adjusted)",
                               labels=[*env_labels, "queue"])
    executing = GaugeMetricFamily("trigger_queue_executing", "Executing runs per queue",
                                  labels=[*env_labels, "queue"])
    queue_limit = GaugeMetricFamily("trigger_queue_concurrency_limit",
                                    "Concurrency limit per queue (absent: no queue limit)",
                                    labels=[*env_labels, "queue"])
    env_exec = GaugeMetricFamily("trigger_environment_executing",
                                 "Executing runs per environment", labels=env_labels)
    env_limit = GaugeMetricFamily("trigger_environment_concurrency_limit",
                                  "Concurrency limit per environment", labels=env_labels)
    worker_slots = GaugeMetricFamily("trigger_worker_slots", "Run slots of a connected worker",
                                     labels=[*env_labels, "instance"])
    worker_free = GaugeMetricFamily("trigger_worker_free_slots",
                                    "Free run slots of a connected worker",
                                    labels=[*env_labels, "instance"])
    connected = GaugeMetricFamily("trigger_workers_connected", "Connected worker replicas",
                                  labels=env_labels)
    now_ms = time.time() * 1000
    per_queue: dict[tuple[str, str, str], list[float]] = {}
    for row in queued:
        env = [row["project"], row["slug"]]
        runs.add_metric([*env, "PENDING", row["queue"], row["task_id"]], row["n"])
        entry = per_queue.setdefault((row["project"], row["slug"], row["queue"]),
                                     [0, float("inf")])
        entry[0] += row["n"]
        entry[1] = min(entry[1], float(row["oldest_score"]))
    for (project, slug, queue), (n, score) in per_queue.items():
        depth.add_metric([project, slug, queue], n)
        oldest.add_metric([project, slug, queue], max(0.0, (now_ms - score) / 1000))
    exec_queue: dict[tuple[str, str, str], int] = {}
    exec_env: dict[tuple[str, str], int] = {}
    for row in live:
        runs.add_metric([row["project"], row["slug"], row["status"], row["queue"],
                         row["task_id"]], row["n"])
        if row["status"] == "EXECUTING":
            key = (row["project"], row["slug"], row["queue"])
            exec_queue[key] = exec_queue.get(key, 0) + row["n"]
            exec_env[key[:2]] = exec_env.get(key[:2], 0) + row["n"]
    seen_env: set[tuple[str, str]] = set()
    for row in limits:
        env_key = (row["project"], row["slug"])
        if env_key not in seen_env:
            seen_env.add(env_key)
            env_limit.add_metric(list(env_key), row["env_limit"])
            env_exec.add_metric(list(env_key), exec_env.get(env_key, 0))
        if row["queue"] is not None:
            key = (*env_key, row["queue"])
            executing.add_metric(list(key), exec_queue.pop(key, 0))
            if row["queue_limit"] is not None:
                queue_limit.add_metric(list(key), row["queue_limit"])
    for leftover, n in exec_queue.items():  # executing in a queue with no queues row
        executing.add_metric(list(leftover), n)
    per_env: dict[tuple[str, str], int] = {}
    for row in workers:
        labels = [row["project"], row["slug"], str(row["instance_id"])]
        worker_slots.add_metric(labels, row["slots"])
        worker_free.add_metric(labels, max(0, row["slots"] - row["busy"]))
        per_env[(row["project"], row["slug"])] = per_env.get((row["project"], row["slug"]),
                                                             0) + 1
    for env_pair, n in per_env.items():
        connected.add_metric(list(env_pair), n)
    return [runs, depth, oldest, executing, queue_limit, env_exec, env_limit, worker_slots,
            worker_free, connected]


class Families(Collector):
    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Any:
        return iter(self.families)
