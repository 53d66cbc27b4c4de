"""Waits benchmark (issue 5): resume latency and the cost of checkpointed runs.

- resume latency: token completed (the moment before the HTTP call) → task body continues,
  waiting in place (``checkpoint_after`` 10 s) and after a checkpoint (``checkpoint_after`` 0:
  the run is requeued, leased again and replayed);
- memory: USS/RSS of the worker's whole process tree idle, then holding N checkpointed runs.

    python bench/waits.py [--samples 20] [--checkpointed 10000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import _server_url, _with_database, start_api, stop_process  # noqa: E402
from tests.e2e.conftest import Project, WorkerProcess, make_project, start_worker  # noqa: E402
from worker.engine.migrate import migrate  # noqa: E402

TASKS = '''
import time
from worker import task, wait, idempotency_keys


@task(id="resume")
async def resume(payload, ctx):
    # the token the bench made beforehand: a global key (a plain string is the run's own)
    key = idempotency_keys.create(payload["key"], scope="global")
    token = await wait.create_token(idempotency_key=key)
    await wait.for_token(token)
    return {"resumed_at": time.time()}


@task(id="parked")
async def parked(payload, ctx):
    token = await wait.create_token(tags=["parked"])
    await wait.for_token(token)
'''


def _status(project: Project, run_id: str) -> str:
    with project.client() as client:
        return str(client.get(f"/api/v3/runs/{run_id}").json()["status"])


def resume_latency(project: Project, samples: int, in_place: bool) -> list[float]:
    client = project.client()
    out = []
    for _ in range(samples):
        key = uuid.uuid4().hex
        global_key = hashlib.sha256(key.encode()).hexdigest()  # idempotency_keys.create, global
        reply = client.post("/api/v1/waitpoints/tokens", json={"idempotencyKey": global_key})
        token = reply.json()
        run_id = client.post("/api/v1/tasks/resume/trigger",
                             json={"payload": {"key": key}}).json()["id"]
        want = "EXECUTING" if in_place else "WAITING"
        deadline = time.monotonic() + 30
        while _status(project, run_id) != want and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # let it park on the token (in place: inside the long poll)
        sent = time.time()
        client.post(f"/api/v1/waitpoints/tokens/{token['id']}/complete", json={"data": 1})
        while True:
            run = client.get(f"/api/v3/runs/{run_id}").json()
            if run["status"] == "COMPLETED":
                out.append((run["output"]["resumed_at"] - sent) * 1000)
                break
            if time.monotonic() > deadline + 30:
                raise RuntimeError(f"run {run_id} did not resume: {run['status']}")
            time.sleep(0.005)
    return out


def tree_memory(worker: WorkerProcess) -> dict[str, float]:
    procs = [psutil.Process(worker.process.pid), *worker.tree()]
    uss = rss = 0
    for proc in procs:
        try:
            info = proc.memory_full_info()
        except psutil.NoSuchProcess:
            continue
        uss += info.uss
        rss += info.rss
    return {"processes": len(procs), "uss_mib": uss / 2**20, "rss_mib": rss / 2**20}


def park(project: Project, database_url: str, count: int) -> float:
    client = project.client()
    started = time.monotonic()
    for offset in range(0, count, 1000):
        n = min(1000, count - offset)
        client.post("/api/v1/tasks/parked/batch", json={"items": [{"payload": {}}] * n})
    while True:
        with psycopg.connect(database_url) as conn:
            (waiting,) = conn.execute(  # type: ignore[misc]
                "SELECT count(*) FROM runs WHERE status = 'WAITING_TO_RESUME'").fetchone()
        if waiting >= count:
            return time.monotonic() - started
        time.sleep(0.5)


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[int(0.9 * (len(ordered) - 1))]
    return f"p50 {statistics.median(ordered):.1f} ms, p90 {p90:.1f} ms, max {ordered[-1]:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--checkpointed", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    server_url, server = _server_url()
    name = f"trigger_bench_waits_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    db = _with_database(server_url, name)
    api, workers = None, []
    try:
        migrate(db)
        api = start_api(db, Path(tempfile.gettempdir()) / f"{name}-api.log")
        results: dict[str, Any] = {}
        print(f"nproc={os.cpu_count()} load={os.getloadavg()[0]:.2f}")
        for in_place in (True, False):
            project = make_project(Path(tempfile.mkdtemp()), api, {"tasks.py": TASKS})
            worker = start_worker(project, concurrency=args.concurrency,
                                  TRIGGER_CHECKPOINT_AFTER="10" if in_place else "0")
            workers.append(worker)
            label = "in place" if in_place else "after checkpoint"
            results[label] = resume_latency(project, args.samples, in_place)
            print(f"resume latency {label}: {summary(results[label])}")
            if not in_place:
                idle = tree_memory(worker)
                took = park(project, db, args.checkpointed)
                time.sleep(2)
                busy = tree_memory(worker)
                print(f"worker tree idle: {idle['processes']} processes, USS "
                      f"{idle['uss_mib']:.1f} MiB, RSS {idle['rss_mib']:.1f} MiB")
                print(f"worker tree with {args.checkpointed:,} checkpointed runs (parked in "
                      f"{took:.0f} s): {busy['processes']} processes, USS "
                      f"{busy['uss_mib']:.1f} MiB, RSS {busy['rss_mib']:.1f} MiB")
            worker.stop()
    finally:
        for worker in workers:
            worker.stop()
        if api is not None:
            stop_process(api.process)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        del server


if __name__ == "__main__":
    main()
