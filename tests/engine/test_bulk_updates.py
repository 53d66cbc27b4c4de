"""UPDATEs of many runs at once (issue 16, migration 0017; docs/run-states.md).

The statement-level trigger on runs caches its plans per session; a session's first UPDATE of
runs touches one row, and a cached nested loop over the statement's transition tables made a
later UPDATE of N runs cost N² (a worker registering over 3,000 parked runs took a second, 8 s
at 8,000). Bulk statements are now planned for their true sizes: this checks it through the
real API and Postgres, and that the bulk path still completes RUN and BATCH waitpoints and
feeds realtime exactly like the one-run path.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from typing import Any

import httpx
import psycopg
import pytest

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker

CHANNEL = "trigger_run_changes"


def _park(client: httpx.Client, task: str, count: int, **options: object) -> list[str]:
    """`count` runs of a task no connected worker has: they wait in PENDING_VERSION."""
    ids: list[str] = []
    while len(ids) < count:
        size = min(1000, count - len(ids))
        reply = client.post(f"/api/v1/tasks/{task}/batch",
                            json={"items": [{"payload": i, "options": options}
                                            for i in range(size)]})
        assert reply.status_code == 200, reply.text
        ids += [run["id"] for run in reply.json()["runs"]]
    return ids


def _gone(api_url: str, key: str, tasks: list[str]) -> None:
    """A worker that declared `tasks` and stopped: they are known, and nobody serves them."""
    worker = ProtocolWorker(api_url, key, tasks)
    worker.post("/engine/v1/worker/heartbeat",
                {"instance_id": worker.instance_id, "run_ids": [], "stopping": True})


def _statuses(database_url: str, ids: list[str]) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT status, count(*) FROM runs WHERE id = ANY(%s) GROUP BY 1",
                            (ids,)).fetchall()
    return {status: count for status, count in rows}


def _changes(listener: psycopg.Connection[Any], ids: Iterable[str], status: str,
             timeout: float = 20) -> set[str]:
    """The runs of `ids` that the realtime feed reported in `status` within `timeout`."""
    wanted, seen = set(ids), set()
    deadline = time.monotonic() + timeout
    while seen != wanted and time.monotonic() < deadline:
        for note in listener.notifies(timeout=0.5, stop_after=1000):
            for line in note.payload.split("\n"):
                _env, run_id, _batch, line_status, _micros = line.split(" ")
                if run_id in wanted and line_status == status:
                    seen.add(run_id)
    return seen


def _listen(database_url: str) -> psycopg.Connection[Any]:
    listener = psycopg.connect(database_url, autocommit=True)
    listener.execute(f"LISTEN {CHANNEL}")
    return listener


def test_a_worker_registers_over_a_large_parked_backlog(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    _gone(api_server.url, key, ["parked"])
    parked = _park(client, "parked", 8000)
    assert _statuses(api_server.database_url, parked) == {"PENDING_VERSION": 8000}
    with _listen(api_server.database_url) as listener:
        started = time.monotonic()
        worker = ProtocolWorker(api_server.url, key, ["parked"])
        took = time.monotonic() - started
        # N² took 8.7 s here at 8,000 runs, a plan for the true size 0.23 s: the bound is only
        # there to tell the two apart, with room for a loaded machine
        assert took < 5, f"registering over 8,000 parked runs took {took:.1f} s"
        assert _statuses(api_server.database_url, parked) == {"PENDING": 8000}
        assert _changes(listener, parked, "PENDING") == set(parked)
    assert len(worker.dequeue(max_runs=5)) == 5


def _checkpoint(client: httpx.Client, worker: ProtocolWorker, run: dict[str, Any]) -> None:
    reply = client.post(f"/engine/v1/runs/{run['run_id']}/checkpoint",
                        json={"instance_id": worker.instance_id,
                              "attempt_number": run["attempt_number"]})
    assert reply.status_code == 200 and reply.json()["suspended"], reply.text


def test_a_bulk_finish_completes_run_and_batch_waitpoints(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    """Children of waiting parents expire in one sweep statement of 53 runs (above the bulk
    threshold): each parent resumes with its child's outcome, the batch's in item order."""
    client, key = env
    _gone(api_server.url, key, ["child"])
    worker = ProtocolWorker(api_server.url, key, ["parent"])
    wait = {"resumeParentOnCompletion": True, "journalSeq": 0}
    parents: dict[str, list[str]] = {}
    for _ in range(3):
        parent_id = client.post("/api/v1/tasks/parent/trigger", json={}).json()["id"]
        [parent] = worker.dequeue()
        child = client.post("/api/v1/tasks/child/trigger",
                            json={"payload": 1, "options": {**wait, "parentRunId": parent_id,
                                                          "ttl": "1h"}})
        assert child.status_code == 200, child.text
        parents[parent_id] = [child.json()["id"]]
        _checkpoint(client, worker, parent)
    batch_parent_id = client.post("/api/v1/tasks/parent/trigger", json={}).json()["id"]
    [batch_parent] = worker.dequeue()
    batch = client.post("/api/v1/tasks/child/batch", json={
        "items": [{"payload": i, "options": {"ttl": "1h"}} for i in range(50)],
        "options": {**wait, "parentRunId": batch_parent_id}})
    assert batch.status_code == 200, batch.text
    parents[batch_parent_id] = [run["id"] for run in batch.json()["runs"]]
    _checkpoint(client, worker, batch_parent)
    children = [run_id for ids in parents.values() for run_id in ids]
    assert _statuses(api_server.database_url, children) == {"PENDING_VERSION": 53}

    with _listen(api_server.database_url) as listener:
        with psycopg.connect(api_server.database_url) as conn:  # all due in one commit
            conn.execute("UPDATE runs SET expires_at = now() - interval '1 second'"
                         " WHERE id = ANY(%s)", (children,))
        resumed: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + 20
        while len(resumed) < 4:
            assert time.monotonic() < deadline, f"resumed only {sorted(resumed)}"
            resumed.update({run["run_id"]: run for run in worker.dequeue(max_runs=4,
                                                                          wait_ms=2000)})
        assert _changes(listener, children, "EXPIRED") == set(children)
    assert set(resumed) == set(parents)
    for parent_id, ids in parents.items():
        [entry] = resumed[parent_id]["journal"]
        point = entry["waitpoint"]
        assert point["output_is_error"] or parent_id == batch_parent_id, point
        output = json.loads(point["output"])
        if parent_id == batch_parent_id:
            assert [item["id"] for item in output] == ids
            assert {item["ok"] for item in output} == {False}
            assert {item["error"]["code"] for item in output} == {"TASK_RUN_EXPIRED"}
        else:
            assert output["code"] == "TASK_RUN_EXPIRED", output


def test_bulk_statements_are_planned_for_their_size(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    """The plans themselves (where the server has auto_explain): in a session whose trigger plans
    were cached by one-row UPDATEs, an UPDATE of 600 runs joins its transition tables without a
    nested loop over both (which would drop 600 * 599 rows in its join filter)."""
    client, key = env
    _gone(api_server.url, key, ["planned"])
    parked = _park(client, "planned", 600)
    with psycopg.connect(api_server.database_url) as conn:
        plans: list[str] = []
        conn.add_notice_handler(lambda diag: plans.append(diag.message_primary or ""))
        for run_id in parked[:3]:  # cache the function's plans at one row
            conn.execute("UPDATE runs SET updated_at = now() WHERE id = %s", (run_id,))
        try:
            conn.execute("LOAD 'auto_explain'")
        except psycopg.Error:
            pytest.skip("this Postgres has no auto_explain")
        for setting, value in (("log_min_duration", "0"), ("log_analyze", "on"),
                               ("log_timing", "off"), ("log_nested_statements", "on"),
                               ("log_level", "notice")):
            conn.execute(f"SET auto_explain.{setting} = '{value}'")
        conn.execute("UPDATE runs SET status = 'CANCELED', completed_at = now()"
                     " WHERE id = ANY(%s)", (parked,))  # a bulk cancel: every query runs
        conn.rollback()
    # the function's statements that join the two transition tables
    joins = [plan for plan in plans if "JOIN old_rows o ON o.id =" in plan]
    assert len(joins) == 3, plans  # RUN waitpoints, BATCH lookup, realtime feed
    removed = [int(n) for plan in joins
               for n in re.findall(r"Rows Removed by Join Filter: (\d+)", plan)]
    assert max(removed, default=0) < len(parked), joins
