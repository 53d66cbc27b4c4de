"""Run metadata through the real API, and from task code in a real worker process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServer
from tests.e2e.conftest import WorkerProcess, make_project, start_worker, wait_final
from tests.protocol_worker import ProtocolWorker
from worker.common.metadata_ops import MetadataOperationError, apply_operations


@pytest.fixture
def api(api_server: ApiServer, project_keys: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=api_server.url, headers=api_server.headers(project_keys["dev"]),
                        timeout=30)


def test_operations() -> None:
    ops: list[dict[str, Any]] = [
        {"type": "set", "key": "status", "value": "running"},
        {"type": "set", "key": "$.progress.percent", "value": 10},
        {"type": "increment", "key": "$.progress.percent", "value": 15},
        {"type": "increment", "key": "count", "value": -2},
        {"type": "append", "key": "logs", "value": "a"},
        {"type": "append", "key": "logs", "value": "b"},
        {"type": "append", "key": "logs", "value": "a"},
        {"type": "remove", "key": "logs", "value": "a"},
        {"type": "set", "key": "gone", "value": 1},
        {"type": "delete", "key": "gone"},
        {"type": "set", "key": "a.b", "value": "literal key"},
    ]
    assert apply_operations({"keep": True}, ops) == {
        "keep": True, "status": "running", "progress": {"percent": 25}, "count": -2,
        "logs": ["b"], "a.b": "literal key"}
    assert apply_operations({"x": 1}, [{"type": "update", "value": {"y": 2}}]) == {"y": 2}
    with pytest.raises(MetadataOperationError, match="not a number"):
        apply_operations({"s": "x"}, [{"type": "increment", "key": "s", "value": 1}])


def test_put_get_parent_root_and_limit(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    ProtocolWorker(api_server.url, project_keys["dev"], ["meta"])
    root = api.post("/api/v1/tasks/meta/trigger",
                    json={"options": {"metadata": {"children": 0}}}).json()["id"]
    parent = api.post("/api/v1/tasks/meta/trigger",
                      json={"options": {"parentRunId": root}}).json()["id"]
    child = api.post("/api/v1/tasks/meta/trigger",
                     json={"options": {"parentRunId": parent}}).json()["id"]
    reply = api.put(f"/api/v1/runs/{child}/metadata", json={
        "operations": [{"type": "set", "key": "step", "value": 1}],
        "parentOperations": [{"type": "append", "key": "done", "value": child}],
        "rootOperations": [{"type": "increment", "key": "children", "value": 1}],
    })
    assert reply.status_code == 200 and reply.json() == {"metadata": {"step": 1}}
    assert api.get(f"/api/v1/runs/{parent}/metadata").json() == {"metadata": {"done": [child]}}
    assert api.get(f"/api/v1/runs/{root}/metadata").json() == {"metadata": {"children": 1}}
    assert api.get(f"/api/v3/runs/{child}").json()["metadata"] == {"step": 1}
    # a root run is its own parent and root
    api.put(f"/api/v1/runs/{root}/metadata",
            json={"rootOperations": [{"type": "increment", "key": "children", "value": 2}]})
    assert api.get(f"/api/v1/runs/{root}/metadata").json()["metadata"]["children"] == 3

    too_big = api.put(f"/api/v1/runs/{child}/metadata",
                      json={"operations": [{"type": "set", "key": "blob", "value": "x" * 270_000}]})
    assert too_big.status_code == 413 and "256 KiB" in too_big.json()["error"]
    assert api.get(f"/api/v1/runs/{child}/metadata").json() == {"metadata": {"step": 1}}
    bad = api.put(f"/api/v1/runs/{child}/metadata", json={"operations": [{"type": "zap"}]})
    assert bad.status_code == 400 and "'type' must be one of" in bad.json()["error"]
    assert api.get("/api/v1/runs/run_nope/metadata").status_code == 404


def test_completion_carries_the_final_flush(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    worker = ProtocolWorker(api_server.url, project_keys["dev"], ["meta-done"])
    run_id = api.post("/api/v1/tasks/meta-done/trigger", json={}).json()["id"]
    leased = worker.dequeue()[0]
    assert leased["ctx"]["run"]["metadata"] is None
    result = worker.complete(leased, ok=True, output="1", metadata={
        "operations": [{"type": "set", "key": "final", "value": True}],
        "parentOperations": [], "rootOperations": []})
    assert result["outcome"] == "RUN_FINISHED"
    assert api.get(f"/api/v3/runs/{run_id}").json()["metadata"] == {"final": True}


TASKS = '''
import asyncio
from worker import metadata, streams, task, schedules

@task(id="progress")
async def progress(payload, ctx):
    metadata.set("status", "started").increment("steps")
    metadata.root.increment("root_calls")
    await metadata.flush()
    for i in range(3):
        metadata.increment("steps").append("seen", i)
    await asyncio.sleep(1.3)          # the periodic flush sends the loop's changes
    async def tokens():
        for word in ["hello", "streaming", "world"]:
            yield word
    sent = await streams.pipe("llm", tokens())
    metadata.set("status", "done").set("sent", sent)   # rides on the completion
    try:
        metadata.set("huge", "x" * 300_000)
    except ValueError as exc:
        metadata.set("limit_error", type(exc).__name__)
    return {"current": metadata.current()}

@schedules.task(id="every-morning", cron={"pattern": "0 7 * * *", "timezone": "Europe/Paris"})
async def every_morning(payload, ctx):
    return {"ts": payload.timestamp.isoformat(), "tz": payload.timezone}
'''


def test_task_code_metadata_streams_and_sdk_subscription(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    import asyncio

    from worker.sdk import client
    from worker.sdk.realtime import streams
    from worker.sdk.runs import runs

    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    workers.append(start_worker(project, concurrency=1))
    http = project.client()
    schedules = http.get("/api/v1/schedules").json()["data"]
    assert [(s["task"], s["timezone"], s["type"]) for s in schedules] == [
        ("every-morning", "Europe/Paris", "DECLARATIVE")]

    async def scenario() -> tuple[list[Any], list[Any], Any]:
        client.configure(api_url=api_server.url, secret_key=project.key)
        try:
            handle = await client.trigger("progress", {})
            snapshots = [r async for r in runs.subscribe_to_run(handle.id)]
            chunks = [c async for c in streams.read(handle.id, "llm")]
            manual = await client.trigger("every-morning", {})
            return snapshots, chunks, manual.id
        finally:
            await client.aclose()
            client._settings.update(api_url=None, secret_key=None)

    snapshots, chunks, manual_id = asyncio.run(scenario())
    final = snapshots[-1]
    assert final.status == "COMPLETED"
    assert final.metadata == {"status": "done", "steps": 4, "seen": [0, 1, 2], "sent": 3,
                              "root_calls": 1, "limit_error": "MetadataTooLargeError"}
    assert final.output["current"] == final.metadata
    seen_meta = [s.metadata for s in snapshots if s.status == "EXECUTING"]
    assert {"status": "started", "steps": 1, "root_calls": 1} in seen_meta  # explicit flush
    assert any(m and m.get("steps") == 4 and "sent" not in m for m in seen_meta)  # periodic
    assert chunks == ["hello", "streaming", "world"]
    manual = wait_final(http, manual_id)
    assert manual["status"] == "COMPLETED" and manual["output"]["tz"] == "UTC"
