"""Parent → child latency: does checkpointing at once when the child is still queued help?

    python -m bench.child_wait [--parents 5] [--code DIR]

Two cases, each timed from the parent's trigger to its completion (median, min–max):

- deadlock: parent and child share a queue with concurrency limit 1, so the child cannot start
  until the parent gives its slot back (by checkpointing);
- free: the child has a queue of its own and starts at once (the parent should wait in place).

``--code`` runs the API and worker from another checkout (e.g. main's, for "before").
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import psycopg

from bench.common import DEFAULT_PG, ROOT
from bench.faults import Api, Worker, _prepare

TASKS = '''
import time
from worker import task, queue

solo = queue("solo", concurrency_limit=1)


@task(id="locked-parent", queue=solo)
async def locked_parent(payload, ctx):
    return (await locked_child.trigger_and_wait(1)).unwrap()


@task(id="locked-child", queue=solo)
async def locked_child(payload, ctx):
    time.sleep(0.05)
    return payload


@task(id="free-parent")
async def free_parent(payload, ctx):
    return (await free_child.trigger_and_wait(1)).unwrap()


@task(id="free-child")
async def free_child(payload, ctx):
    time.sleep(0.05)
    return payload
'''


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _measure(client: httpx.Client, task_id: str, parents: int) -> list[float]:
    out = []
    for _ in range(parents):  # one at a time: latency, not throughput
        run_id = client.post(f"/api/v1/tasks/{task_id}/trigger", json={"payload": 1}).json()["id"]
        deadline = time.monotonic() + 60
        while True:
            run = client.get(f"/api/v3/runs/{run_id}").json()
            if run["status"] == "COMPLETED":
                out.append(_seconds(run["finishedAt"]) - _seconds(run["createdAt"]))
                break
            if run["status"] in ("FAILED", "CRASHED") or time.monotonic() > deadline:
                raise RuntimeError(f"{task_id} run {run_id}: {run['status']}")
            time.sleep(0.02)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parents", type=int, default=5)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--database", default=os.environ.get("DATABASE_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    code = args.code.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="child-wait-"))
    ref = f"child-wait-{uuid.uuid4().hex[:6]}"
    url, key = _prepare(args.database, code, ref)
    project = tmp / "project"
    (project / "trigger").mkdir(parents=True)
    (project / "trigger" / "__init__.py").write_text("")
    (project / "trigger" / "tasks.py").write_text(TASKS)
    (project / "trigger_config.py").write_text(
        "from worker import define_config\n\n"
        f"config = define_config(project={ref!r}, dirs=['trigger'], max_duration=60)\n"
    )
    api = Api(code, url, tmp / "api.log")
    worker = Worker(code, project, api, key, tmp / "worker.log")
    try:
        api.start()
        api.wait_healthy()
        worker.start()
        time.sleep(4)
        with httpx.Client(
            base_url=api.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as client:
            for case in ("locked-parent", "free-parent"):
                values = _measure(client, case, args.parents)
                print(
                    f"{case:14} parent trigger → completed: median "
                    f"{statistics.median(values):.2f} s (min {min(values):.2f}, "
                    f"max {max(values):.2f}, n={len(values)})"
                )
    finally:
        worker.stop()
        api.kill()
        dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with psycopg.connect(args.database, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
