"""A ``waitMs`` retrieve is answered before the completion that ended its run
(engine/engine.py ``_answered_first``): when a worker's ``/complete`` finishes a run that a
``GET /api/v3/runs/{id}?waitMs=…`` of the same API process waits for, the completion hands
the run it read to the retrieve and lets it answer before answering the worker itself.

Observed through a real API process, real Postgres and a protocol-level worker over HTTP.
The order is read from the API's own access log: uvicorn writes a request's access line
when the response's status line and headers go to the socket, and the body follows in the
same step (nothing between them waits), so the order of the two lines in the log is the
order in which the two responses were written. Wall-clock times are never compared.

The retrieve must be waiting in the API (its watch registered, the run claimed by the
completion) before the worker completes, or it would read the finished run itself: the API
runs with one long-poll per environment (``TRIGGER_MAX_LONG_POLLS_PER_ENV=1``), so a probe
retrieve refused with 429 proves the first one holds the environment's only slot, which it
takes after registering its watch and reading the run once.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ApiServer, start_api, stop_process
from tests.protocol_worker import ProtocolWorker

WAIT_MS = 30_000


@pytest.fixture
def logged_api(api_server: ApiServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """An API process of its own with its access log on (``--log-level info``: the shared
    one logs warnings only) and one long-poll per environment; (its URL, its log file)."""
    server = start_api(api_server.database_url, tmp_path / "api.log", log_level="info",
                       TRIGGER_MAX_LONG_POLLS_PER_ENV="1")
    try:
        assert server.log_path is not None
        yield server.url, server.log_path
    finally:
        stop_process(server.process)


class Retrieve(threading.Thread):
    """``GET /api/v3/runs/{id}?waitMs=WAIT_MS`` in the background."""

    def __init__(self, url: str, key: str, run_id: str) -> None:
        super().__init__(daemon=True)
        self.url, self.key, self.run_id = url, key, run_id
        self.reply: httpx.Response | None = None

    def run(self) -> None:
        self.reply = httpx.get(f"{self.url}/api/v3/runs/{self.run_id}",
                               params={"waitMs": WAIT_MS},
                               headers={"Authorization": f"Bearer {self.key}"},
                               timeout=WAIT_MS / 1000 + 30)


def waiting_retrieve(url: str, key: str, run_id: str) -> Retrieve:
    """A retrieve known to be waiting in the API for ``run_id`` to end."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        target = Retrieve(url, key, run_id)
        target.start()
        while target.is_alive() and time.monotonic() < deadline:
            # a retrieve that waits takes the environment's one long-poll slot: a second one
            # (waiting 1 ms at most) is refused while the first holds it, and only then
            probe = httpx.get(f"{url}/api/v3/runs/{run_id}", params={"waitMs": 1},
                              headers={"Authorization": f"Bearer {key}"}, timeout=30)
            if probe.status_code == 429:
                assert target.is_alive(), "the slot's holder answered: it was not the target"
                return target
            assert probe.status_code == 200, probe.text
            assert probe.json()["status"] == "EXECUTING"
        # the target met a probe holding the slot (refused too): start again
        target.join(timeout=30)
        assert target.reply is not None and target.reply.status_code == 429, target.reply
    raise AssertionError("the waitMs retrieve never held the long-poll slot")


def access_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if '" 200' in line]


def test_the_waiting_retrieve_is_answered_before_the_completion(
    logged_api: tuple[str, Path], project_keys: dict[str, str]
) -> None:
    url, log = logged_api
    key = project_keys["dev"]
    worker = ProtocolWorker(url, key, ["answered-first"])
    reply = httpx.post(f"{url}/api/v1/tasks/answered-first/trigger", json={"payload": 1},
                       headers={"Authorization": f"Bearer {key}"}, timeout=30)
    reply.raise_for_status()
    run_id = reply.json()["id"]
    [leased] = worker.dequeue(wait_ms=5000)
    assert leased["run_id"] == run_id

    target = waiting_retrieve(url, key, run_id)
    result = worker.complete(leased, ok=True, output='{"done":true}',
                             output_type="application/json")
    assert result["status"] == "COMPLETED"
    target.join(timeout=30)
    assert target.reply is not None and target.reply.status_code == 200, target.reply
    assert target.reply.json()["status"] == "COMPLETED"
    assert target.reply.json()["output"] == {"done": True}

    lines = access_lines(log)
    answered = [i for i, line in enumerate(lines)
                if f"GET /api/v3/runs/{run_id}?waitMs={WAIT_MS} " in line]
    completed = [i for i, line in enumerate(lines)
                 if "POST /engine/v1/worker/complete " in line]
    assert len(answered) == 1 and len(completed) == 1, lines
    assert answered[0] < completed[0], "\n".join(lines)
