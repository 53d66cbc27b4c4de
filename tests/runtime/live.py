"""Helpers for runtime tests against the real API: an in-process worker, trigger, wait."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from worker.runtime.worker_main import run_worker

FINAL = {"COMPLETED", "FAILED", "CRASHED", "SYSTEM_FAILURE", "CANCELED", "EXPIRED", "TIMED_OUT"}


def worker_processes() -> list[psutil.Process]:
    """Our zygotes and their executors."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "worker.runtime.zygote" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def zygotes() -> list[psutil.Process]:
    return [p for p in worker_processes() if p.ppid() == os.getpid()]


class Worker:
    def __init__(self, project: Path, url: str, key: str, **kwargs: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.stop = asyncio.Event()
        self.force = asyncio.Event()
        self.task = asyncio.create_task(run_worker(project, url, key, on_event=self.events.append,
                                                   stop=self.stop, force=self.force, **kwargs))

    async def wait_event(self, kind: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.events:
                if e["type"] == kind and all(e.get(k) == v for k, v in match.items()):
                    return e
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.02)
        raise TimeoutError(f"no {kind} {match} in {self.events[-20:]}")

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)


async def trigger(client: httpx.AsyncClient, task_id: str, payload: Any) -> str:
    r = await client.post(f"/api/v1/tasks/{task_id}/trigger", json={"payload": payload})
    r.raise_for_status()
    return str(r.json()["id"])


async def wait_final(client: httpx.AsyncClient, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await client.get(f"/api/v3/runs/{run_id}")
        r.raise_for_status()
        run: dict[str, Any] = r.json()
        if run["status"] in FINAL:
            return run
        await asyncio.sleep(0.1)
    raise TimeoutError(f"run {run_id} not final: {run}")
