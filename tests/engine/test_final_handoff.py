"""A ``waitMs`` retrieve woken by a completion of the same API process gets the run the
completion read in its own round trip (run_reads.py, RealtimeHub.wake_final): the answer must
be exactly the plain retrieve's, for every shape of run, and a waiter of another process (or a
completion of another process) still gets its answer by the notification."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServer, start_api, stop_process
from tests.protocol_worker import ProtocolWorker
from worker.engine import runs
from worker.engine.engine import Engine
from worker.engine.keys import resolve_key
from worker.engine.settings import EngineSettings


def _trigger(client: httpx.Client, task: str, payload: Any = 1, **options: Any) -> str:
    reply = client.post(f"/api/v1/tasks/{task}/trigger",
                        json={"payload": payload, "options": options})
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def _waited(client: httpx.Client, run_id: str, complete: Any) -> dict[str, Any]:
    """The body of a waitMs retrieve, the run completed by ``complete`` while it waits."""
    def finish_soon() -> None:
        time.sleep(0.4)
        complete()

    finisher = threading.Thread(target=finish_soon)
    finisher.start()
    try:
        reply = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "20000"}, timeout=30)
    finally:
        finisher.join()
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _steady(body: dict[str, Any]) -> dict[str, Any]:
    """The body without what moves with the clock: a running related run's duration."""
    related = {key: {k: v for k, v in run.items() if k != "durationMs" or run["isCompleted"]}
               if isinstance(run, dict) else run for key, run in body["relatedRuns"].items()}
    return {**body, "relatedRuns": related}


def test_the_handed_run_is_the_plain_retrieve(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    """Root and child runs, tags, metadata, an offloaded payload, a run with children of its
    own, attempts after a retry: the waited answer equals the plain retrieve after it."""
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["shape", "kid"], retry={"max_attempts": 2})
    root = _trigger(client, "shape", {"n": 1}, tags=["a", "b"], metadata={"m": 1})
    [lease] = worker.dequeue(wait_ms=5000)
    # the root triggers a child while it runs, and its first attempt fails (retried)
    child = _trigger(client, "kid", "x" * 600_000, parentRunId=root, tags=["kid"])
    failed = worker.complete(lease, ok=False, error={"type": "BUILT_IN_ERROR", "name": "E",
                                                      "message": "boom"}, retry={"delay_ms": 0})
    assert failed["outcome"] == "RETRY_QUEUED", failed
    leases = worker.dequeue(max_runs=5, wait_ms=5000)
    by_id = {r["run_id"]: r for r in leases}
    if root not in by_id or child not in by_id:  # the other came with a later dequeue
        by_id.update({r["run_id"]: r for r in worker.dequeue(max_runs=5, wait_ms=5000)})

    for run_id, output in ((child, '"kid done"'), (root, '{"ok": [1, 2]}')):
        body = _waited(client, run_id, lambda r=by_id[run_id], o=output: worker.complete(
            r, ok=True, output=o, output_type="application/json"))
        assert body["status"] == "COMPLETED"
        assert _steady(body) == _steady(client.get(f"/api/v3/runs/{run_id}").json())
    root_body = client.get(f"/api/v3/runs/{root}").json()
    assert [a["status"] for a in root_body["attempts"]] == ["FAILED", "COMPLETED"]
    assert root_body["attemptCount"] == 2
    assert [c["id"] for c in root_body["relatedRuns"]["children"]] == [child]
    child_body = client.get(f"/api/v3/runs/{child}").json()
    assert child_body["depth"] == 1 and child_body["relatedRuns"]["parent"]["id"] == root
    assert child_body["payload"] == "x" * 600_000
    worker.close()


def test_a_waiting_reader_with_a_run_token_gets_the_same_answer(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["tok"])
    reply = client.post("/api/v1/tasks/tok/trigger", json={"payload": 2})
    run_id, token = reply.json()["id"], reply.headers["x-trigger-jwt"]
    [lease] = worker.dequeue(wait_ms=5000)
    reader = httpx.Client(base_url=api_server.url,
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
    body = _waited(reader, run_id, lambda: worker.complete(lease, ok=True, output="3"))
    assert body["output"] == 3
    assert body == reader.get(f"/api/v3/runs/{run_id}").json()
    reader.close()
    worker.close()


@pytest.fixture
def second_api(api_server: ApiServer, tmp_path: Path) -> Iterator[ApiServer]:
    other = start_api(api_server.database_url, tmp_path / "api2.log")
    yield other
    stop_process(other.process)


def test_a_completion_of_another_process_still_wakes_the_waiter(
    env: tuple[httpx.Client, str], api_server: ApiServer, second_api: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(second_api.url, key, ["far"])  # completes through the second API
    run_id = _trigger(client, "far")
    [lease] = worker.dequeue(wait_ms=5000)
    started = time.monotonic()
    body = _waited(client, run_id, lambda: worker.complete(lease, ok=True, output="4"))
    assert time.monotonic() - started < 15, "answered at the timeout, not by the notification"
    assert body["output"] == 4
    assert body == client.get(f"/api/v3/runs/{run_id}").json()
    worker.close()


def test_the_waiter_does_not_read_again_when_the_completion_hands_it_the_run(
    env: tuple[httpx.Client, str], api_server: ApiServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one process (the engine as the API holds it): once the waiter has read the running
    run, every later retrieve fails; the completion's hand-off answers it all the same."""
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["inproc"])
    run_id = _trigger(client, "inproc", {"p": 1})
    [lease] = worker.dequeue(wait_ms=5000)

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        engine = await Engine.open(api_server.database_url, EngineSettings(), pool_size=3)
        try:
            resolved = await resolve_key(engine.pool, hashlib.sha256(key.encode()).digest())
            assert resolved is not None
            env_ = resolved.env
            real = runs.retrieve
            reads = 0

            async def once(*args: Any, **kwargs: Any) -> Any:
                nonlocal reads
                reads += 1
                if reads > 1:
                    raise AssertionError("the waiter read the run again")
                return await real(*args, **kwargs)

            monkeypatch.setattr(runs, "retrieve", once)
            waiter = asyncio.create_task(engine.wait_run_final(env_, run_id, 20_000,
                                                               children=True))
            while run_id not in engine.realtime._finals:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # its first read is done
            [result] = await engine.complete(env_, worker.instance_id, [{
                "run_id": run_id, "attempt_number": lease["attempt_number"], "ok": True,
                "output": '{"r": 1}', "output_type": "application/json"}])
            assert result.status == "COMPLETED"
            handed = await asyncio.wait_for(waiter, 10)
            monkeypatch.setattr(runs, "retrieve", real)
            return handed, await real(engine.pool, env_, run_id, children=True)
        finally:
            await engine.stop()

    handed, plain = asyncio.run(scenario())
    assert handed["status"] == "COMPLETED_SUCCESSFULLY"
    assert handed == plain
    worker.close()
