"""Run metadata is flushed about once a second while the run executes (the executor starts the
periodic flush at the run's first change: a run that changes nothing has none), through a real
API and a real `trigger worker`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ApiServer
from tests.e2e.conftest import make_project, start_worker, trigger, wait_final, wait_for

TASKS = """
import asyncio, threading
from worker import task, metadata


@task(id="slow-progress")
async def slow_progress(payload):
    await asyncio.sleep(0.3)           # no change yet: nothing to flush
    metadata.set("progress", 0.5)      # only buffered: the periodic flush sends it
    for _ in range(100):
        await asyncio.sleep(0.1)
        if payload["gate"] and __import__("os").path.exists(payload["gate"]):
            break
    # a change made from a thread is flushed as well
    thread = threading.Thread(target=lambda: metadata.set("from_thread", True))
    thread.start()
    thread.join()
    for _ in range(100):
        await asyncio.sleep(0.1)
        if __import__("os").path.exists(payload["gate"] + ".2"):
            break
    return "done"


@task(id="quiet")
async def quiet(payload):
    return metadata.current()
"""


def test_metadata_changes_are_flushed_while_the_run_executes(api_server: ApiServer,
                                                             tmp_path: Path) -> None:
    project = make_project(tmp_path / "p", api_server, {"tasks.py": TASKS})
    worker = start_worker(project, concurrency=1, TRIGGER_RUN_METADATA_FLUSH_INTERVAL="200")
    try:
        client = project.client()
        gate = str(tmp_path / "gate")
        run_id = trigger(client, "slow-progress", {"gate": gate}, metadata={"seed": 1})

        def metadata() -> object:
            return client.get(f"/api/v3/runs/{run_id}").json().get("metadata")

        wait_for(lambda: metadata() == {"seed": 1, "progress": 0.5}, timeout=30,
                 what="the periodic flush")
        Path(gate).write_text("")
        wait_for(lambda: metadata() == {"seed": 1, "progress": 0.5, "from_thread": True},
                 timeout=30, what="the flush of a change made in a thread")
        Path(gate + ".2").write_text("")
        assert wait_final(client, run_id)["status"] == "COMPLETED"
        # a run that changes nothing completes with its metadata as it was
        quiet = trigger(client, "quiet", {}, metadata={"kept": True})
        run = wait_final(client, quiet)
        assert run["status"] == "COMPLETED" and run["output"] == {"kept": True}
        assert run["metadata"] == {"kept": True}
    finally:
        worker.stop()
