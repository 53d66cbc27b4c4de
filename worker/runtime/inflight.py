"""The runs this replica holds: on an executor (:class:`InFlight`), or leased and starting."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field, replace

from worker.common import errors as codes
from worker.common.machines import MACHINE_PRESETS
from worker.common.protocol import Completion, DequeuedRun
from worker.runtime.executor_link import group_rss
from worker.runtime.outcomes import failed_completion, oom_retry_machine
from worker.runtime.pool import Executor, ExecutorDied, Pool


def machine_memory(run: DequeuedRun) -> int | None:
    """The memory of the run's machine preset in bytes (None: an unknown preset)."""
    preset = MACHINE_PRESETS.get(run.machine)
    return int(preset["memory"] * 1024**3) if preset else None


@dataclass
class InFlight:
    run: DequeuedRun
    pool: Pool
    executor: Executor
    started: float = field(default_factory=time.monotonic)
    lost: bool = False
    timed_out: bool = False
    out_of_memory: bool = False
    #: machine preset memory in bytes (None: not enforced)
    memory_limit: int | None = None
    #: seconds spent in durable waits (excluded from max_duration), and since when paused
    paused_total: float = 0.0
    paused_since: float | None = None

    #: execution seconds after which the supervisor kills the executor (max_duration + the
    #: grace: the backstop behind the executor's own limit); None: no limit
    budget: float | None = None

    def overdue(self) -> bool:
        """Past its budget (waits excluded): the backstop kills the executor."""
        return self.budget is not None and self.execution_seconds() > self.budget

    def pause(self, paused: bool) -> None:
        now = time.monotonic()
        if paused and self.paused_since is None:
            self.paused_since = now
        elif not paused and self.paused_since is not None:
            self.paused_total += now - self.paused_since
            self.paused_since = None

    def execution_seconds(self) -> float:
        """Execution time of the attempt so far, waits excluded, including what it used
        before a checkpoint (the lease's ``execution_ms``)."""
        now = time.monotonic()
        waiting = self.paused_total + (now - self.paused_since if self.paused_since else 0.0)
        return self.run.execution_ms / 1000 + now - self.started - waiting

    @property
    def run_id(self) -> str:
        return self.run.run_id

    async def kill_after(self, grace: float) -> None:
        """A canceled run gets ``grace`` seconds (on_cancel hooks, finally blocks) to end
        before its executor's group is killed."""
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and self.executor.run is self.run:
            await asyncio.sleep(0.05)
        if self.executor.run is self.run and self.executor.alive:
            self.pool.kill(self.executor)

    def died_completion(self, died: ExecutorDied) -> Completion:
        """The failed completion of an attempt whose executor died (killed by us or not)."""
        run = self.run
        if self.timed_out:
            return failed_completion(run, codes.internal_error(
                codes.MAX_DURATION_EXCEEDED,
                f"Run exceeded maximum duration of {self.run.max_duration}s and was killed"))
        if self.out_of_memory:
            limit_mib = (self.memory_limit or 0) >> 20
            completion = failed_completion(run, codes.internal_error(
                codes.TASK_PROCESS_OOM_KILLED,
                f"The task process used more than the {limit_mib} MiB of machine "
                f"{self.run.machine!r} and was killed (pid {died.pid})"), skipped=False)
            return replace(completion, retry_machine=oom_retry_machine(run))
        return failed_completion(run, died.wire_error(), skipped=False)


class RunTable:
    """Runs on executors (``inflight``) and runs leased but not yet on one (``starting``):
    all of them are heartbeated."""

    def __init__(self) -> None:
        self.inflight: dict[str, InFlight] = {}
        self.starting: set[str] = set()

    def get(self, run_id: str) -> InFlight | None:
        return self.inflight.get(run_id)

    def held(self) -> list[str]:
        ids = [f.run_id for f in self.inflight.values() if not f.lost]
        ids += list(self.starting)
        return ids

    def __len__(self) -> int:
        return len(self.inflight)

    async def enforce(self, interval: float = 0.2) -> None:
        """Every ``interval``: kill an executor whose run is past its ``max_duration`` backstop
        (the executor's own limit did not stop it), or whose process group outgrows its run's
        machine preset (OOM). One sweep for all runs: no timer per run; a run younger than
        ``interval`` is not measured yet (at a drain's rates most runs never are)."""
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for flight in list(self.inflight.values()):
                if flight.lost or now - flight.started < interval:
                    continue
                if not flight.timed_out and flight.overdue():
                    flight.timed_out = True
                    flight.pool.kill(flight.executor)
                    continue
                if flight.memory_limit is None or flight.out_of_memory:
                    continue
                if group_rss(flight.executor.pid) > flight.memory_limit:
                    flight.out_of_memory = True
                    flight.pool.kill(flight.executor)
