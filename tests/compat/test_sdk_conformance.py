"""Trigger.dev's own TypeScript SDK (pinned in tests/compat/node/package.json) against our API.

A real API, a real worker running the Python tasks below, and a node script
(tests/compat/node/conformance.mjs) calling the SDK the way a Trigger.dev user's backend does;
the SDK validates every response with its own zod schemas. The node packages are installed
with ``npm ci`` into tests/compat/node/node_modules (ignored by git, kept between runs).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ApiServer
from tests.e2e.conftest import WorkerProcess, make_project, start_worker

NODE_DIR = Path(__file__).resolve().parent / "node"

TASKS = '''
import asyncio
import datetime as dt
import os

from worker import queue, schedules, task, tasks, wait


@task(id="compat-echo")
async def echo(payload, ctx):
    when = payload.get("when") if isinstance(payload, dict) else None
    return {
        "echo": payload,
        "whenYear": when.year if isinstance(when, dt.datetime) else None,
        "at": dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
    }


@task(id="compat-slow")
async def slow(payload, ctx):
    await asyncio.sleep(1.0)
    return {"slow": True}


@task(id="compat-wait-token")
async def wait_token(payload, ctx):
    result = await wait.for_token(payload["token"])
    return result.output


@task(id="compat-parent")
async def parent(payload, ctx):
    child = await tasks.trigger("compat-echo", {"from": "parent"})
    return {"child": child.id}


@task(id="compat-env")
async def env(payload, ctx):
    return {"value": os.environ.get(payload["name"])}


@task(id="compat-queued", queue=queue("compat-queue", concurrency_limit=5))
async def queued(payload, ctx):
    return payload


compat_scheduled = schedules.task(id="compat-scheduled", run=lambda payload, ctx: None)
'''


def install_sdk() -> None:
    """``npm ci`` the pinned SDK unless node_modules already matches the lock file."""
    marker = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if marker.exists() and marker.stat().st_mtime >= lock.stat().st_mtime:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=NODE_DIR,
        check=True,
        timeout=300,
    )


def run_conformance(api: ApiServer, project_ref: str, key: str) -> list[dict[str, Any]]:
    completed = subprocess.run(
        ["node", "conformance.mjs"],
        cwd=NODE_DIR,
        env={
            **os.environ,
            "TRIGGER_API_URL": api.url,
            "TRIGGER_SECRET_KEY": key,
            "PROJECT_REF": project_ref,
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    assert lines and "summary" in lines[-1], completed.stdout + completed.stderr
    return lines[:-1]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_trigger_dev_sdk_works_unchanged(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    install_sdk()
    project = make_project(tmp_path, api_server, {"compat.py": TASKS})
    workers.append(start_worker(project, concurrency=4))
    results = run_conformance(api_server, project.ref, project.key)
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)} of {len(results)} SDK calls work")
    assert not failed, "\n\n".join(f"{r['call']}:\n{r['error']}" for r in failed)
