"""/metrics values move as runs are queued and drained; `trigger logs` / `trigger runs show`
print what a run did (real API, real worker, real CLI processes)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, ApiServer, start_api, stop_process
from tests.e2e.conftest import WorkerProcess, make_project, start_worker, trigger, wait_final
from tests.observability.test_traces import wait_tree

TASKS = """
from worker import logger, queue, task

metered = queue("metered", concurrency_limit=2)


@task(id="obs-metered", queue=metered)
async def metered_task(payload, ctx):
    logger.info("working on it", {"n": payload["n"]})
    logger.warn("careful", {"password": "hunter2"})
    print("plain print")
    return payload["n"]
"""
TOKEN = "metrics-token-for-tests"


@pytest.fixture
def metrics_api(database_url: str, tmp_path: Path) -> Iterator[ApiServer]:
    server = start_api(database_url, tmp_path / "api.log", TRIGGER_METRICS_TOKEN=TOKEN,
                       TRIGGER_METRICS_CACHE_SECONDS="0")
    yield server
    stop_process(server.process)


def scrape(api: ApiServer) -> dict[str, float]:
    reply = httpx.get(f"{api.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert reply.status_code == 200, reply.text
    values: dict[str, float] = {}
    for line in reply.text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def value(values: dict[str, float], metric: str, **labels: str) -> float:
    """Sum of the samples of ``metric`` whose labels include ``labels``."""
    total = 0.0
    for name, v in values.items():
        base, _, rest = name.partition("{")
        if base != metric:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if all(found.get(k) == want for k, want in labels.items()):
            total += v
    return total


def test_metrics_move_as_runs_queue_and_drain(
    metrics_api: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    assert httpx.get(f"{metrics_api.url}/metrics").status_code == 401
    assert httpx.get(f"{metrics_api.url}/metrics",
                     headers={"Authorization": "Bearer wrong"}).status_code == 401
    project = make_project(tmp_path, metrics_api, {"m.py": TASKS})
    workers.append(start_worker(project))
    env = {"project": project.ref, "environment": "dev"}
    before = scrape(metrics_api)
    with project.client() as client:
        paused = client.post("/api/v1/queues/metered/pause", json={"action": "pause"})
        assert paused.status_code == 200, paused.text
        ids = [trigger(client, "obs-metered", {"n": n}) for n in range(5)]
        queued = scrape(metrics_api)
        assert value(queued, "trigger_queue_depth", queue="metered", **env) == 5
        assert value(queued, "trigger_runs", status="PENDING", task="obs-metered",
                     queue="metered", **env) == 5
        assert value(queued, "trigger_queue_oldest_age_seconds", queue="metered", **env) >= 0
        assert value(queued, "trigger_queue_concurrency_limit", queue="metered", **env) == 2
        assert value(queued, "trigger_environment_concurrency_limit", **env) > 0
        assert value(queued, "trigger_workers_connected", **env) == 1
        assert value(queued, "trigger_worker_free_slots", **env) == value(
            queued, "trigger_worker_slots", **env) > 0
        client.post("/api/v1/queues/metered/pause", json={"action": "resume"})
        for run_id in ids:
            assert wait_final(client, run_id)["status"] == "COMPLETED"
    drained = scrape(metrics_api)
    assert value(drained, "trigger_queue_depth", queue="metered", **env) == 0
    assert value(drained, "trigger_runs", status="PENDING", queue="metered", **env) == 0
    assert value(drained, "trigger_attempt_completions_total", outcome="completed") - value(
        before, "trigger_attempt_completions_total", outcome="completed") == 5
    assert value(drained, "trigger_runs_dequeued_total") - value(
        before, "trigger_runs_dequeued_total") == 5
    assert value(drained, "trigger_run_start_latency_seconds_count") - value(
        before, "trigger_run_start_latency_seconds_count") == 5
    assert value(drained, "trigger_dequeue_seconds_count") > value(
        before, "trigger_dequeue_seconds_count")


def _cli(project_url: str, key: str, *args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "worker", *args], capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TRIGGER_API_URL": project_url, "TRIGGER_SECRET_KEY": key,
             "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_trigger_logs_and_runs_show_print_a_run(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"m.py": TASKS})
    workers.append(start_worker(project))
    with project.client() as client:
        run_id = trigger(client, "obs-metered", {"n": 7})
        # --follow started before the run ends returns once it has, with every line
        follower = subprocess.Popen(
            [sys.executable, "-m", "worker", "logs", run_id, "--follow"], stdout=subprocess.PIPE,
            text=True, env={**os.environ, "TRIGGER_API_URL": api_server.url,
                            "TRIGGER_SECRET_KEY": project.key, "PYTHONPATH": str(ROOT)})
        assert wait_final(client, run_id)["status"] == "COMPLETED"
    followed, _ = follower.communicate(timeout=60)
    printed = _cli(api_server.url, project.key, "logs", run_id)
    for out in (followed, printed):
        assert "INFO  working on it" in out and '"n": 7' in out
        assert "WARN  careful" in out and "hunter2" not in out
        assert "plain print" in out
    warn_only = _cli(api_server.url, project.key, "logs", run_id, "--level", "warn")
    assert "careful" in warn_only and "working on it" not in warn_only
    with project.client() as client:  # spans go out in batches, up to a second after the run
        wait_tree(client, run_id, 2)
    shown = _cli(api_server.url, project.key, "runs", "show", run_id)
    assert "status   COMPLETED" in shown and "output   7" in shown
    assert re.search(r"^obs-metered\s+\|=+", shown, re.M), shown
    assert re.search(r"^  Attempt 1\s+\|", shown, re.M), shown
    listed = _cli(api_server.url, project.key, "runs", "list")
    assert run_id in listed and "COMPLETED" in listed
    missing = subprocess.run([sys.executable, "-m", "worker", "logs", "run_nope"],
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "TRIGGER_API_URL": api_server.url,
                                  "TRIGGER_SECRET_KEY": project.key, "PYTHONPATH": str(ROOT)})
    assert missing.returncode != 0 and "not found" in missing.stderr


BLOCKER = """
import asyncio
from pathlib import Path
from worker import task


@task(id="obs-blocker")
async def blocker(payload, ctx):
    while not Path(payload["go"]).exists():
        await asyncio.sleep(0.05)
    return "done"
"""


def test_worker_metrics_port_serves_busy_executors_and_recycles(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    from tests.conftest import free_port

    project = make_project(tmp_path, api_server, {"b.py": BLOCKER}, max_runs_per_process=1)
    port = free_port()
    workers.append(start_worker(project, TRIGGER_WORKER_METRICS_PORT=str(port)))

    def worker_scrape() -> dict[str, float]:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        return {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
                for line in text.splitlines() if line and not line.startswith("#")}

    go = tmp_path / "go"
    with project.client() as client:
        run_id = trigger(client, "obs-blocker", {"go": str(go)})
        deadline = time.monotonic() + 30
        while worker_scrape().get("trigger_worker_executors_busy") != 1:
            assert time.monotonic() < deadline, worker_scrape()
            time.sleep(0.05)
        assert worker_scrape()["trigger_worker_runs_inflight"] == 1
        go.write_text("go")
        assert wait_final(client, run_id)["status"] == "COMPLETED"
    deadline = time.monotonic() + 30
    while worker_scrape().get('trigger_worker_executor_recycles_total{reason="max_runs"}') != 1:
        assert time.monotonic() < deadline, worker_scrape()
        time.sleep(0.05)
    after = worker_scrape()
    assert after["trigger_worker_executors_busy"] == 0
    assert after["trigger_worker_executor_kills_total"] == 0
