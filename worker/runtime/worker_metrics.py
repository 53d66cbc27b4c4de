"""A worker replica's own Prometheus metrics (``trigger worker --metrics-port N``).

Served by ``prometheus_client``'s HTTP server thread on ``TRIGGER_WORKER_METRICS_ADDR``
(default 127.0.0.1: an admin port, not for the internet). Values are read from the supervisor
at scrape time: busy and warm executors, free slots, runs in flight, executor recycles (by
reason) and kills (lost lease, overdue max_duration, out of memory), log lines dropped while the
API was unreachable. Counters of a code version retired by a reload are carried over.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from worker.runtime.supervisor import Supervisor


class SupervisorCollector(Collector):
    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Any:
        sup = self.supervisor
        pools = [p for p in [sup.current, *sup.old] if p is not None]
        busy = GaugeMetricFamily("trigger_worker_executors_busy", "Executors running a run")
        busy.add_metric([], sum(p.busy_count() for p in pools))
        alive = GaugeMetricFamily("trigger_worker_executors", "Executor processes alive")
        alive.add_metric([], sum(len(p.executors) for p in pools))
        free = GaugeMetricFamily("trigger_worker_free_slots", "Runs this replica can take now")
        free.add_metric([], sup.current.free_slots() if sup.current is not None else 0)
        inflight = GaugeMetricFamily("trigger_worker_runs_inflight", "Runs on executors")
        inflight.add_metric([], len(sup.inflight))
        recycles = CounterMetricFamily("trigger_worker_executor_recycles",
                                       "Executors replaced after a run", labels=["reason"])
        totals = dict(sup.retired_recycles)
        for pool in pools:
            for reason, n in pool.recycled.items():
                totals[reason] = totals.get(reason, 0) + n
        for reason, n in sorted(totals.items()):
            recycles.add_metric([reason], n)
        kills = CounterMetricFamily("trigger_worker_executor_kills",
                                    "Executors killed mid-run (lost lease, max_duration, OOM)")
        kills.add_metric([], sup.retired_kills + sum(p.killed for p in pools))
        dropped = CounterMetricFamily("trigger_worker_dropped_logs",
                                      "Log lines dropped while the API was unreachable")
        dropped.add_metric([], sup.dropped_logs)
        return iter([busy, alive, free, inflight, recycles, kills, dropped])


def serve(supervisor: Supervisor, port: int) -> None:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(supervisor))
    start_http_server(port, addr=os.environ.get("TRIGGER_WORKER_METRICS_ADDR", "127.0.0.1"),
                      registry=registry)
