"""Issue 3 semantics with real worker processes: limits across replicas, child runs."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from tests.conftest import ApiServer
from tests.e2e.conftest import (
    WorkerProcess,
    make_project,
    start_worker,
    trigger,
    wait_final,
    wait_for,
)

TASKS = '''
import asyncio, json, os, time
from pathlib import Path
from worker import task, queue, tasks, idempotency_keys

serial = queue("serial", concurrency_limit=1)


@task(id="one-at-a-time", queue=serial)
async def one_at_a_time(payload, ctx):
    started = time.time()
    await asyncio.sleep(0.3)
    line = json.dumps({"run": ctx.run.id, "start": started, "end": time.time()})
    with open(payload["log"], "a") as f:
        f.write(line + "\\n")
    return {"pid": os.getpid()}


@task(id="parent")
async def parent(payload, ctx):
    a = await tasks.trigger("child", {"n": 1}, idempotency_key="same-child")
    b = await tasks.trigger("child", {"n": 2}, idempotency_key="same-child")
    other = await tasks.trigger("child", {"n": 3},
                                idempotency_key=idempotency_keys.create("x", scope="global"))
    Path(payload["out"]).write_text(json.dumps([a.id, b.id, other.id]))
    await asyncio.sleep(30)


@task(id="child")
async def child(payload, ctx):
    await asyncio.sleep(30)
'''


def test_queue_limit_holds_across_worker_replicas(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    workers.append(start_worker(project, name="a", concurrency=2))
    workers.append(start_worker(project, name="b", concurrency=2))
    client = project.client()
    log = tmp_path / "spans.jsonl"
    ids = [trigger(client, "one-at-a-time", {"log": str(log)}) for _ in range(5)]
    for run_id in ids:
        assert wait_final(client, run_id)["status"] == "COMPLETED"
    spans = sorted((json.loads(line) for line in log.read_text().splitlines()),
                   key=lambda s: s["start"])
    assert len(spans) == 5
    for earlier, later in itertools.pairwise(spans):
        assert later["start"] >= earlier["end"] - 0.01  # never two at once (clock slack 10 ms)


def test_child_runs_are_linked_and_canceled_with_their_parent(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    workers.append(start_worker(project, concurrency=4))
    client = project.client()
    out = tmp_path / "children.json"
    parent_id = trigger(client, "parent", {"out": str(out)})
    wait_for(out.exists, what="the parent to trigger its children")
    first, second, other = json.loads(out.read_text())
    assert first == second  # a raw key inside a run is scoped to that run: one child
    assert other != first
    child = client.get(f"/api/v3/runs/{first}").json()
    assert child["parentRunId"] == parent_id
    client.post(f"/api/v2/runs/{parent_id}/cancel")
    for run_id in (parent_id, first, other):
        assert wait_final(client, run_id, timeout=20)["status"] == "CANCELED"
