"""Durable semantics across checkpoints and deploys (issue 19: items 1, 4, 5, 6, 7 and the
open questions), through a real API and real `trigger worker` processes.

The rules are in docs/run-states.md ("Versions", "Resuming a checkpointed run").
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ApiServer
from tests.e2e.conftest import (
    Project,
    WorkerProcess,
    make_project,
    start_worker,
    trigger,
    wait_final,
    wait_for,
)

TASKS = """
import json, os, time
from worker import task, wait, step, metadata


def note(payload, line):
    with open(payload["log"], "a") as f:
        f.write(json.dumps(line) + "\\n")


async def token_wait(payload):
    token = await wait.create_token(tags=[payload["tag"]])
    return await wait.for_token(token)


@task(id="meta-waiter")
async def meta_waiter(payload, ctx):
    metadata.increment("count")
    await metadata.flush()                 # the increment reaches the engine ...
    metadata.set("status", "waiting")      # ... this change is only buffered
    await token_wait(payload)
    metadata.set("status", "done")
    return metadata.current()


@task(id="counter")
async def counter(payload, ctx):
    started_with = metadata.current()
    metadata.increment("count")
    return started_with


def busy(seconds):
    time.sleep(seconds)
    return seconds


@task(id="timed", max_duration=2.5)
async def timed(payload, ctx):
    await step("work", busy, payload["work"])   # execution, recorded once
    await token_wait(payload)
    busy(payload["work"])                        # as much again after the checkpoint
    return "finished"


def _hook(name):
    return lambda payload: note(payload, {"hook": name, "pid": os.getpid()})


def _wait_hook(name):
    return lambda payload, wait: note(payload, {"hook": name, "type": wait["type"]})


async def _middleware(payload, next):
    note(payload, {"hook": "middleware", "pid": os.getpid()})
    await next()


@task(id="hooked", on_start=_hook("on_start"), on_start_attempt=_hook("on_start_attempt"),
      init=_hook("init"), middleware=_middleware,
      on_wait=_wait_hook("on_wait"), on_resume=_wait_hook("on_resume"),
      on_success=_hook("on_success"))
async def hooked(payload, ctx):
    await wait.for_(seconds=0.2)           # in process
    await token_wait(payload)              # checkpoints, resumes in another process
    return "ok"
"""

def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _status(client: httpx.Client, run_id: str) -> str:
    return str(client.get(f"/api/v3/runs/{run_id}").json()["status"])


def _complete_token(client: httpx.Client, tag: str, data: Any = "ok") -> None:
    """Complete the WAITING token tagged ``tag`` once the run has created it."""
    found: list[str] = []

    def created() -> bool:
        page = client.get("/api/v1/waitpoints/tokens",
                          params={"filter[tags]": tag, "filter[status]": "WAITING"}).json()
        found[:] = [t["id"] for t in page["data"]]
        return bool(found)

    wait_for(created, what=f"the token tagged {tag}")
    reply = client.post(f"/api/v1/waitpoints/tokens/{found[0]}/complete", json={"data": data})
    assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def resuming(api_server: ApiServer, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Project, WorkerProcess]]:
    """One worker for the checkpoint tests: waits checkpoint after 0.3 s, and metadata is
    flushed only when the task asks (or at a checkpoint / the completion)."""
    root = tmp_path_factory.mktemp("resume")
    project = make_project(root, api_server, {"tasks.py": TASKS})
    config = root / "trigger_config.py"
    config.write_text(config.read_text().replace(
        "config = define_config(",
        "import json, os\n\n\ndef _global_start(payload):\n"
        "    with open(payload['log'], 'a') as f:\n"
        "        f.write(json.dumps({'hook': 'global_on_start', 'pid': os.getpid()}) + '\\n')\n\n\n"
        "config = define_config(on_start=_global_start, "))
    worker = start_worker(project, concurrency=2, TRIGGER_CHECKPOINT_AFTER="0.3",
                          TRIGGER_RUN_METADATA_FLUSH_INTERVAL="600000")
    yield project, worker
    worker.stop()


def test_metadata_is_flushed_at_a_checkpoint_and_never_applied_twice_nor_replayed(
    resuming: tuple[Project, WorkerProcess], tmp_path: Path
) -> None:
    """Item 4: the change buffered before a checkpoint is visible while the run waits, and the
    increment replayed on resume does not count again."""
    project, _ = resuming
    client = project.client()
    log = str(tmp_path / "log.jsonl")
    run_id = trigger(client, "meta-waiter", {"log": log, "tag": "meta-1"},
                     metadata={"seed": 1})
    wait_for(lambda: _status(client, run_id) == "WAITING", what="the checkpoint")
    waiting = client.get(f"/api/v3/runs/{run_id}").json()["metadata"]
    assert waiting == {"seed": 1, "count": 1, "status": "waiting"}, waiting
    _complete_token(client, "meta-1")
    run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED", run
    assert run["metadata"] == {"seed": 1, "count": 1, "status": "done"}, run["metadata"]
    assert run["output"] == run["metadata"]


def test_a_replay_starts_from_the_metadata_given_at_trigger_time(
    resuming: tuple[Project, WorkerProcess], tmp_path: Path
) -> None:
    """Item 6: the original changed its metadata; its replay starts from {"seed": 1} again."""
    project, _ = resuming
    client = project.client()
    run_id = trigger(client, "counter", {"log": str(tmp_path / "log.jsonl")},
                     metadata={"seed": 1})
    run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED" and run["metadata"] == {"seed": 1, "count": 1}, run
    replay = client.post(f"/api/v1/runs/{run_id}/replay")
    assert replay.status_code == 200, replay.text
    replayed = wait_final(client, replay.json()["id"])
    assert replayed["status"] == "COMPLETED", replayed
    assert replayed["output"] == {"seed": 1} and replayed["metadata"] == {"seed": 1, "count": 1}


def test_max_duration_counts_execution_before_and_after_a_checkpoint(
    resuming: tuple[Project, WorkerProcess], tmp_path: Path
) -> None:
    """Item 5: work, a checkpointed wait, as much work again, with max_duration 2.5 s: the
    attempt's execution time spans the checkpoint (1.6 + 1.6 s times out), waits excluded
    (0.8 + 0.8 s completes, though it waited 3 s)."""
    project, _ = resuming
    client = project.client()
    log = str(tmp_path / "log.jsonl")
    over = trigger(client, "timed", {"log": log, "tag": "timed-over", "work": 1.6})
    within = trigger(client, "timed", {"log": log, "tag": "timed-within", "work": 0.8})
    for run_id in (over, within):
        wait_for(lambda r=run_id: _status(client, r) == "WAITING", what="the checkpoint")
    time.sleep(3)
    _complete_token(client, "timed-over")
    _complete_token(client, "timed-within")
    run = wait_final(client, over)
    assert run["status"] == "TIMED_OUT", run
    assert run["error"]["code"] == "MAX_DURATION_EXCEEDED", run["error"]
    run = wait_final(client, within)
    assert run["status"] == "COMPLETED" and run["output"] == "finished", run


def test_hooks_around_a_checkpoint_and_an_in_process_wait(
    resuming: tuple[Project, WorkerProcess], tmp_path: Path
) -> None:
    """Item 7: on_start (global and task) and on_start_attempt once per run, on_wait and
    on_resume for every wait — in place and across the checkpoint — and init / middleware in
    each process that executes the attempt."""
    project, _ = resuming
    client = project.client()
    log = tmp_path / "log.jsonl"
    run_id = trigger(client, "hooked", {"log": str(log), "tag": "hooked-1"})
    wait_for(lambda: _status(client, run_id) == "WAITING", what="the checkpoint")
    _complete_token(client, "hooked-1")
    run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED", run
    hooks = [line["hook"] for line in _lines(log)]
    assert hooks == [
        # the first process: the attempt begins
        "middleware", "init", "global_on_start", "on_start", "on_start_attempt",
        "on_wait", "on_resume",            # wait.for_(0.2): in process
        "on_wait",                         # the token wait; then the checkpoint
        # the process that resumes the attempt (replays `run` from the top)
        "middleware", "init",
        "on_resume",                       # the token wait ends
        "on_success",
    ], hooks
    waits = [(line["hook"], line["type"]) for line in _lines(log) if "type" in line]
    assert waits == [("on_wait", "duration"), ("on_resume", "duration"),
                     ("on_wait", "token"), ("on_resume", "token")]


V1 = """
from worker import task, wait

@task(id="deployed")
async def deployed(payload, ctx):
    token = await wait.create_token(tags=[payload["tag"]])
    await wait.for_token(token)
    return "v1"
"""

V2 = V1.replace('return "v1"', 'return "v2"')

WITHOUT = """
from worker import task

@task(id="other")
async def other(payload, ctx):
    return "other"
"""


def test_a_deploy_never_strands_a_checkpointed_run(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    """Item 1, production: a run checkpointed on version 1; version 1's workers stop. While
    only code without its task runs, it waits in PENDING_VERSION with a reason (and so does a
    DELAYED run of that task: the open question); when code with the task is deployed, both
    run there (the checkpointed one migrates and replays)."""
    project = make_project(tmp_path / "p", api_server, {"tasks.py": V1})
    client = project.client()
    old = start_worker(project, name="v1", TRIGGER_CHECKPOINT_AFTER="0.3")
    workers.append(old)
    run_id = trigger(client, "deployed", {"tag": "deploy-1"})
    wait_for(lambda: _status(client, run_id) == "WAITING", what="the checkpoint")
    old_version = client.get(f"/api/v3/runs/{run_id}").json()["version"]
    old.stop()

    (tmp_path / "p" / "trigger" / "tasks.py").write_text(WITHOUT)
    workers.append(start_worker(project, name="without", TRIGGER_CHECKPOINT_AFTER="0.3"))
    delayed_id = trigger(client, "deployed", {"tag": "deploy-2"}, delay="1s")
    _complete_token(client, "deploy-1")
    wait_for(lambda: _status(client, run_id) == "PENDING_VERSION", what="PENDING_VERSION")
    parked = client.get(f"/api/v3/runs/{run_id}").json()
    assert old_version in parked["statusReason"] and "deployed" in parked["statusReason"]
    wait_for(lambda: _status(client, delayed_id) == "PENDING_VERSION",
             what="the delayed run in PENDING_VERSION")
    assert "deployed" in client.get(f"/api/v3/runs/{delayed_id}").json()["statusReason"]

    (tmp_path / "p" / "trigger" / "tasks.py").write_text(V2)
    workers.append(start_worker(project, name="v2", TRIGGER_CHECKPOINT_AFTER="0.3"))
    run = wait_final(client, run_id, timeout=30)
    assert run["status"] == "COMPLETED" and run["output"] == "v2", run
    assert run["version"] != old_version and run["attemptCount"] == 1
    _complete_token(client, "deploy-2")
    delayed = wait_final(client, delayed_id, timeout=30)
    assert delayed["status"] == "COMPLETED" and delayed["output"] == "v2", delayed
