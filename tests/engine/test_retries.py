"""Retry paths of the engine: in place (same worker, lease kept), bigger machine after OOM,
lost-lease reasons."""

from __future__ import annotations

import httpx

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker

ERROR = {"type": "BUILT_IN_ERROR", "name": "ValueError", "message": "boom", "stackTrace": ""}




def _trigger(client: httpx.Client, task: str) -> str:
    return str(client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 1}).json()["id"])


def test_short_retry_keeps_the_lease(env: tuple[httpx.Client, str], api_server: ApiServer) -> None:
    client, key = env
    worker = ProtocolWorker(
        api_server.url,
        key,
        ["again"],
        retry={"max_attempts": 3},
        queue={"name": "again-q", "concurrency_limit": 1},
    )
    run_id = _trigger(client, "again")
    other = _trigger(client, "again")
    [first] = worker.dequeue()
    result = worker.complete(
        first, ok=False, error=ERROR, retry={"delay_ms": 200}, retry_in_place=True
    )
    assert result["outcome"] == "RETRY_IMMEDIATELY" and result["status"] == "EXECUTING"
    following = result["next"]
    assert following["run_id"] == run_id and following["attempt_number"] == 2
    assert following["delay_ms"] == 200 and following["ctx"]["environment"]["slug"] == "dev"
    assert worker.dequeue() == []  # it still holds the queue's only slot
    assert worker.heartbeat([run_id])["lost"] == []
    assert worker.complete(following, ok=True, output="2")["outcome"] == "RUN_FINISHED"
    [next_run] = worker.dequeue()
    assert next_run["run_id"] == other
    run = client.get(f"/api/v3/runs/{run_id}").json()
    assert [a["status"] for a in run["attempts"]] == ["FAILED", "COMPLETED"]
    # a long delay goes back to the queue even if the worker asks to keep it
    long = worker.complete(
        next_run, ok=False, error=ERROR, retry={"delay_ms": 60_000}, retry_in_place=True
    )
    assert long["outcome"] == "RETRY_QUEUED"


def test_out_of_memory_retries_on_the_bigger_machine(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    retry = {
        "max_attempts": 3,
        "min_timeout_ms": 10,
        "randomize": False,
        "out_of_memory": {"machine": "large-1x"},
    }
    worker = ProtocolWorker(api_server.url, key, ["hungry"], retry=retry, machine="small-1x")
    run_id = _trigger(client, "hungry")
    [first] = worker.dequeue()
    assert first["machine"] == "small-1x"
    oom = {"type": "INTERNAL_ERROR", "code": "TASK_PROCESS_OOM_KILLED", "message": "rss"}
    assert worker.complete(first, ok=False, error=oom)["outcome"] == "RETRY_QUEUED"
    [second] = worker.dequeue(wait_ms=5000)
    assert second["machine"] == "large-1x" and second["ctx"]["machine"]["memory"] == 8
    # out of memory again on the big machine: no bigger one, so it ends CRASHED
    assert worker.complete(second, ok=False, error=oom)["status"] == "CRASHED"
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "CRASHED"


def test_out_of_memory_moves_machine_even_without_max_attempts(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    """Trigger.dev retries an OOM on the named machine whatever the run's max_attempts (none
    here, or used up), with the delay of the retry options over the defaults."""
    client, key = env
    retry = {"out_of_memory": {"machine": "medium-1x"}, "min_timeout_ms": 20, "randomize": False}
    worker = ProtocolWorker(api_server.url, key, ["greedy"], retry=retry, machine="small-1x")
    oom = {"type": "INTERNAL_ERROR", "code": "TASK_PROCESS_OOM_KILLED", "message": "rss"}
    run_id = _trigger(client, "greedy")
    [first] = worker.dequeue()
    assert worker.complete(first, ok=False, error=oom)["outcome"] == "RETRY_QUEUED"
    [second] = worker.dequeue(wait_ms=5000)
    assert second["machine"] == "medium-1x" and second["attempt_number"] == 2
    assert worker.complete(second, ok=False, error=oom)["status"] == "CRASHED"
    # a run whose one attempt is used up still moves
    capped = client.post(
        "/api/v1/tasks/greedy/trigger", json={"payload": 1, "options": {"maxAttempts": 1}}
    ).json()["id"]
    [only] = worker.dequeue()
    assert only["run_id"] == capped
    assert worker.complete(only, ok=False, error=oom)["outcome"] == "RETRY_QUEUED"
    assert client.get(f"/api/v3/runs/{run_id}").json()["status"] == "CRASHED"


def test_heartbeat_says_which_lost_runs_were_canceled(
    env: tuple[httpx.Client, str], api_server: ApiServer
) -> None:
    client, key = env
    worker = ProtocolWorker(api_server.url, key, ["h"])
    a, b = _trigger(client, "h"), _trigger(client, "h")
    worker.dequeue(max_runs=2)
    client.post(f"/api/v2/runs/{a}/cancel")
    reply = worker.heartbeat([a, b, "run_unknown"])
    assert reply["lost"] == [a, "run_unknown"] and reply["canceled"] == [a]
