"""Runtime numbers: warm start vs cold executor, idle executor USS/PSS, edit → ready on reload.

    python -m bench.runtime [--runs 30] [--reloads 5] [--json out.json]

* **warm start**: from handing a leased run to an idle pre-forked executor until the task body
  runs (the body returns ``time.time()``; same host, same clock);
* **fork start**: the same when the pool has to fork an executor from the zygote first (the
  imports are still warm);
* **cold executor**: a fresh interpreter that imports the project (a new zygote) and then runs
  the task: what every run would cost without the warm pool;
* **idle executor memory**: USS (pages only it holds) and PSS of idle executors, and the zygote;
* **edit → ready**: from writing a task file until the worker's new version has a warm executor
  (file watcher debounce included), through a real API + Postgres (``DATABASE_URL`` or the
  embedded one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.runtime.harness import Harness, make_run  # noqa: E402
from tests.runtime.projects import write_project  # noqa: E402

TASKS = """
import time

from worker.sdk.task import task


@task(id="stamp")
async def stamp(payload):
    return time.time()


@task(id="sync-stamp")
def sync_stamp(payload):
    return time.time()
"""


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"n": len(values), "median_ms": round(statistics.median(ordered), 3),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "min_ms": round(ordered[0], 3)}


async def _timed(h: Harness, task_id: str, ex: Any) -> float:
    assert h.pool
    t0 = time.time()
    frame = await h.pool.execute(ex, make_run(task_id, None, run_id=f"r{uuid.uuid4().hex[:8]}"))
    body = float(orjson.loads(frame["completion"]["output"]))
    return (body - t0) * 1000


async def warm_and_fork(project: Path, runs: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with Harness(project, size=4) as h:
        assert h.pool
        while len(h.pool.idle()) < 4:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.5)  # settle
        for task_id in ("stamp", "sync-stamp"):
            samples = [await _timed(h, task_id, await h.idle()) for _ in range(runs)]
            out[f"warm_start[{task_id}]"] = summary(samples)
        # memory of idle executors and of the zygote
        uss, pss = [], []
        for pid in list(h.pool.executors):
            info = psutil.Process(pid).memory_full_info()
            uss.append(info.uss / 2**20)
            pss.append(info.pss / 2**20)
        zygote = psutil.Process(h.pool.zygote.pid or 0).memory_full_info()
        out["idle_executor_mib"] = {"uss": round(statistics.median(uss), 1),
                                    "pss": round(statistics.median(pss), 1),
                                    "rss": round(psutil.Process(
                                        next(iter(h.pool.executors))).memory_info().rss / 2**20,
                                        1)}
        out["zygote_mib"] = {"uss": round(zygote.uss / 2**20, 1),
                             "pss": round(zygote.pss / 2**20, 1)}
        # fork start: the pool is empty and must fork before running
        samples = []
        for _ in range(min(runs, 15)):
            h.pool.target = 0
            for ex in list(h.pool.executors.values()):
                h.pool._retire(ex)
            while h.pool.executors or h.pool._spawning:
                await asyncio.sleep(0.01)
            t0 = time.time()
            run = make_run("stamp", None, run_id=f"f{uuid.uuid4().hex[:8]}")
            ex = await h.pool.acquire(run)
            frame = await h.pool.execute(ex, run)
            samples.append((float(orjson.loads(frame["completion"]["output"])) - t0) * 1000)
        out["fork_start"] = summary(samples)
    return out


async def cold(project: Path, runs: int) -> dict[str, Any]:
    samples = []
    for _ in range(runs):
        t0 = time.time()
        async with Harness(project, size=1) as h:
            ex = await h.idle()
            assert h.pool
            frame = await h.pool.execute(ex, make_run("stamp", None))
            samples.append((float(orjson.loads(frame["completion"]["output"])) - t0) * 1000)
    return {"cold_executor": summary(samples)}


async def edit_to_ready(project: Path, reloads: int) -> dict[str, Any]:
    import psycopg

    from tests.conftest import _server_url, _with_database, start_api, stop_process
    from worker.engine.keys import create_project
    from worker.engine.migrate import migrate
    from worker.runtime.worker_main import run_worker

    server_url, server = _server_url()
    dbname = f"bench_rt_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    db = _with_database(server_url, dbname)
    logdir = Path(tempfile.mkdtemp(prefix="bench-rt-"))
    api = None
    try:
        migrate(db)
        api = start_api(db, logdir / "api.log")
        keys = create_project(db, "bench-rt")
        events: list[dict[str, Any]] = []
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(project, api.url, keys["dev"], concurrency=2,
                                                watch=True, on_event=events.append, stop=stop))

        async def wait(kind: str, after: int) -> dict[str, Any]:
            while True:
                for e in events[after:]:
                    if e["type"] == kind:
                        return e
                if worker.done():
                    worker.result()
                await asyncio.sleep(0.002)

        await wait("ready", 0)
        await asyncio.sleep(1.0)  # the watcher is up
        samples, internal = [], []
        tasks_py = project / "trigger" / "tasks.py"
        for i in range(reloads):
            mark = len(events)
            t0 = time.monotonic()
            tasks_py.write_text(TASKS + f"\nEDIT = {i}\n")
            event = await wait("reloaded", mark)
            samples.append((time.monotonic() - t0) * 1000)
            internal.append(float(event["ms"]))
            await asyncio.sleep(0.5)
        stop.set()
        await worker
        return {"edit_to_ready": summary(samples),
                "change_seen_to_ready": summary(internal)}
    finally:
        if api is not None:
            stop_process(api.process)
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        shutil.rmtree(logdir, ignore_errors=True)
        del server


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-rt-proj-"))
    try:
        project = write_project(work / "proj", {"trigger/tasks.py": TASKS})
        results: dict[str, Any] = {"cpus": os.cpu_count()}
        results.update(await warm_and_fork(project, args.runs))
        results.update(await cold(project, max(3, args.runs // 5)))
        if args.reloads:
            results.update(await edit_to_ready(project, args.reloads))
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.runtime")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--reloads", type=int, default=5, help="0 skips edit → ready")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
