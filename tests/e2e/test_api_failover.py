"""A worker given several API URLs (comma-separated ``TRIGGER_API_URL``) fails over to one that
answers, for the protocol (register, dequeue, complete) and for the SDK inside its executors."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ApiServer, free_port
from tests.e2e.conftest import WorkerProcess, make_project, start_worker, trigger, wait_final

TASKS = """
from worker import task, wait


@task(id="leaf")
async def leaf(payload, ctx):
    return payload + 1


@task(id="via-sdk")
async def via_sdk(payload, ctx):
    token = await wait.create_token()            # SDK calls from the executor
    await wait.complete_token(token, {"n": 41})
    done = await wait.for_token(token)
    child = await leaf.trigger_and_wait(done.output["n"])
    return child.unwrap()
"""


def test_a_worker_fails_over_to_the_api_that_answers(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    workers.append(start_worker(project, TRIGGER_API_URL=f"{dead},{api_server.url}"))
    client = project.client()
    run = wait_final(client, trigger(client, "via-sdk"), timeout=60)
    assert run["status"] == "COMPLETED", run
    assert run["output"] == 42
