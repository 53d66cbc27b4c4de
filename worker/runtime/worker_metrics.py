"""A worker replica's own Prometheus metrics (``trigger worker --metrics-port N``).

Served by ``prometheus_client``'s HTTP server thread on ``TRIGGER_WORKER_METRICS_ADDR``
(default 127.0.0.1: an admin port, not for the internet). Values are read at scrape time from a
:class:`WorkerGauges` the supervisor hands over (its ``gauges`` method): busy and warm
executors, free slots, runs in flight, executor recycles (by reason) and kills (lost lease,
overdue max_duration, out of memory), log lines dropped while the API was unreachable.
Counters of a code version retired by a reload are carried over by the supervisor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # prometheus_client is imported by serve(): most replicas serve no metrics
    from prometheus_client.core import Metric

    from worker.runtime.pool import Pool


@dataclass(frozen=True)
class WorkerGauges:
    busy: int = 0
    executors: int = 0
    free_slots: int = 0
    inflight: int = 0
    recycles: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    dropped_logs: int = 0


def gauges(pools: list[Pool], current: Pool | None, retired_recycles: dict[str, int],
           retired_kills: int, inflight: int, dropped_logs: int) -> WorkerGauges:
    """The gauges of a replica's pools (``current`` and old ones) and counters it carries."""
    recycles = dict(retired_recycles)
    for pool in pools:
        for reason, n in pool.recycled.items():
            recycles[reason] = recycles.get(reason, 0) + n
    return WorkerGauges(
        busy=sum(p.busy_count() for p in pools),
        executors=sum(len(p.executors) for p in pools),
        free_slots=current.free_slots() if current is not None else 0,
        inflight=inflight, recycles=recycles,
        kills=retired_kills + sum(p.killed for p in pools), dropped_logs=dropped_logs)


class SupervisorCollector:
    """A ``prometheus_client`` collector (duck-typed: its base class is not imported unless
    metrics are served)."""

    def __init__(self, read: Callable[[], WorkerGauges]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        now = self.read()
        busy = GaugeMetricFamily("trigger_worker_executors_busy", "Executors running a run")
        busy.add_metric([], now.busy)
        alive = GaugeMetricFamily("trigger_worker_executors", "Executor processes alive")
        alive.add_metric([], now.executors)
        free = GaugeMetricFamily("trigger_worker_free_slots", "Runs this replica can take now")
        free.add_metric([], now.free_slots)
        inflight = GaugeMetricFamily("trigger_worker_runs_inflight", "Runs on executors")
        inflight.add_metric([], now.inflight)
        recycles = CounterMetricFamily("trigger_worker_executor_recycles",
                                       "Executors replaced after a run", labels=["reason"])
        for reason, n in sorted(now.recycles.items()):
            recycles.add_metric([reason], n)
        kills = CounterMetricFamily("trigger_worker_executor_kills",
                                    "Executors killed mid-run (lost lease, max_duration, OOM)")
        kills.add_metric([], now.kills)
        dropped = CounterMetricFamily("trigger_worker_dropped_logs",
                                      "Log lines dropped while the API was unreachable")
        dropped.add_metric([], now.dropped_logs)
        return iter([busy, alive, free, inflight, recycles, kills, dropped])


def serve(read: Callable[[], WorkerGauges], port: int, addr: str = "127.0.0.1") -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry(auto_describe=False)
    registry.register(SupervisorCollector(read))
    start_http_server(port, addr=addr, registry=registry)
