"""A worker's long-poll skips the look that would find nothing (engine/leases.py, docs/
architecture.md "Direct hand-off"): after a look left nothing to lease, and until a
notification of the environment is heard, the poller's next long-poll goes straight to waiting.

Real API processes (one with a poll fallback of 30 s, so that only a notification or a hand-off
can bring a run sooner), real Postgres, a protocol-level worker over HTTP. What runs the
dequeue statement is read from the API's own ``/metrics`` (``trigger_dequeue_seconds_count``).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServer, start_api, stop_process
from tests.protocol_worker import ProtocolWorker

TOKEN = "drained-polls-metrics"


@pytest.fixture
def slow_poll_api(api_server: ApiServer, tmp_path: Path) -> Iterator[ApiServer]:
    """An API process whose long-polls look by themselves only every 30 s."""
    server = start_api(api_server.database_url, tmp_path / "api.log",
                       TRIGGER_POLL_FALLBACK_SECONDS="30", TRIGGER_METRICS_TOKEN=TOKEN)
    yield server
    stop_process(server.process)


class LongPoll(threading.Thread):
    def __init__(self, worker: ProtocolWorker, wait_ms: int = 20_000) -> None:
        super().__init__(daemon=True)
        self.worker, self.wait_ms = worker, wait_ms
        self.runs: list[dict[str, Any]] | None = None

    def run(self) -> None:
        self.runs = self.worker.dequeue(max_runs=5, wait_ms=self.wait_ms)


def _looks(server: ApiServer) -> float:
    """How many times this API process ran the dequeue statement."""
    text = httpx.get(f"{server.url}/metrics",
                     headers={"Authorization": f"Bearer {TOKEN}"}).text
    found = re.search(r"^trigger_dequeue_seconds_count (\S+)$", text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def _trigger(server: ApiServer, key: str, task: str) -> str:
    reply = httpx.post(f"{server.url}/api/v1/tasks/{task}/trigger", json={"payload": 1},
                       headers={"Authorization": f"Bearer {key}"})
    reply.raise_for_status()
    return str(reply.json()["id"])


def _waits(poll: LongPoll) -> None:
    poll.start()
    time.sleep(0.5)
    assert poll.runs is None, "the long-poll answered at once: it should be waiting"


def test_a_long_poll_after_a_hand_off_goes_straight_to_waiting(
    slow_poll_api: ApiServer, project_keys: dict[str, str]
) -> None:
    key = project_keys["dev"]
    worker = ProtocolWorker(slow_poll_api.url, key, ["drained-a"])
    # once, so that this API process has the task's definition cached: its next triggers are
    # plain one-round-trip triggers, and one that finds a poll waiting inserts its run leased
    warm = _trigger(slow_poll_api, key, "drained-a")
    [run] = worker.dequeue(wait_ms=5000)
    assert run["run_id"] == warm
    worker.complete(run, ok=True, output="1", output_type="application/json")
    before = _looks(slow_poll_api)
    first = LongPoll(worker)
    _waits(first)
    assert _looks(slow_poll_api) == before + 1  # the first long-poll looked: nothing
    run_id = _trigger(slow_poll_api, key, "drained-a")  # leased to the waiting poll
    first.join(timeout=10)
    assert first.runs is not None and [r["run_id"] for r in first.runs] == [run_id]

    second = LongPoll(worker)
    _waits(second)
    assert _looks(slow_poll_api) == before + 1  # nothing queued since: no look
    again = _trigger(slow_poll_api, key, "drained-a")
    second.join(timeout=10)
    assert second.runs is not None and [r["run_id"] for r in second.runs] == [again]
    for run in (*first.runs, *second.runs):
        assert worker.complete(run, ok=True, output="1",
                               output_type="application/json")["status"] == "COMPLETED"


def test_a_run_queued_through_another_api_process_reaches_a_poll_that_skipped_its_look(
    slow_poll_api: ApiServer, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    key = project_keys["dev"]
    worker = ProtocolWorker(slow_poll_api.url, key, ["drained-b"])
    first = LongPoll(worker, wait_ms=300)
    first.start()
    first.join(timeout=10)
    assert first.runs == []  # looked, found nothing, waited, looked again
    looks = _looks(slow_poll_api)
    poll = LongPoll(worker)
    _waits(poll)
    assert _looks(slow_poll_api) == looks  # skipped its first look
    started = time.monotonic()
    run_id = _trigger(api_server, key, "drained-b")  # no hand-off: another API process
    poll.join(timeout=15)
    assert poll.runs is not None and [r["run_id"] for r in poll.runs] == [run_id]
    # the NOTIFY woke it, not the 30 s fallback
    assert time.monotonic() - started < 15
    worker.complete(poll.runs[0], ok=True, output="1", output_type="application/json")


def test_a_worker_polling_with_wait_zero_always_looks(
    slow_poll_api: ApiServer, project_keys: dict[str, str]
) -> None:
    key = project_keys["dev"]
    worker = ProtocolWorker(slow_poll_api.url, key, ["drained-c"])
    looks = _looks(slow_poll_api)
    assert worker.dequeue(wait_ms=0) == [] and worker.dequeue(wait_ms=0) == []
    assert _looks(slow_poll_api) == looks + 2


def test_a_run_held_by_its_queue_limit_starts_when_a_slot_frees(
    slow_poll_api: ApiServer, project_keys: dict[str, str]
) -> None:
    """The long-poll that waits while the queue is at its limit is woken by the run that
    frees the slot (migration 0020), not by its 30 s poll fallback."""
    key = project_keys["dev"]
    worker = ProtocolWorker(slow_poll_api.url, key, ["drained-limited"],
                            queue={"name": "drained-limited-q", "concurrency_limit": 1})
    first, second = _trigger(slow_poll_api, key, "drained-limited"), \
        _trigger(slow_poll_api, key, "drained-limited")
    [held] = worker.dequeue(max_runs=5, wait_ms=5000)  # the limit: one of the two
    assert held["run_id"] in (first, second)
    poll = LongPoll(worker)
    _waits(poll)  # the other waits for the slot
    started = time.monotonic()
    assert worker.complete(held, ok=True, output="1",
                           output_type="application/json")["status"] == "COMPLETED"
    poll.join(timeout=15)
    assert poll.runs is not None and [r["run_id"] for r in poll.runs] == [
        second if held["run_id"] == first else first]
    assert time.monotonic() - started < 15  # well before the 30 s fallback
    worker.complete(poll.runs[0], ok=True, output="1", output_type="application/json")
