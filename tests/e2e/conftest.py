"""Fixtures for end-to-end tests: real `trigger worker` processes against the real API."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import ROOT, ApiServer
from worker.engine.keys import create_project

FINAL = {"COMPLETED", "FAILED", "CRASHED", "SYSTEM_FAILURE", "CANCELED", "EXPIRED", "TIMED_OUT"}


@dataclass
class Project:
    dir: Path
    ref: str
    key: str
    api: ApiServer

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api.url, headers=self.api.headers(self.key), timeout=30)

    def write(self, name: str, source: str) -> None:
        (self.dir / "trigger" / name).write_text(textwrap.dedent(source))


def make_project(root: Path, api: ApiServer, files: dict[str, str], **config: Any) -> Project:
    ref = f"e2e-{uuid.uuid4().hex[:8]}"
    (root / "trigger").mkdir(parents=True, exist_ok=True)
    (root / "trigger" / "__init__.py").write_text("")
    options = {"project": ref, "dirs": ["trigger"], "max_duration": 60, **config}
    (root / "trigger_config.py").write_text(
        f"from worker import define_config\n\nconfig = define_config(**{options!r})\n"
    )
    keys = create_project(api.database_url, ref)
    project = Project(root, ref, keys["dev"], api)
    for name, source in files.items():
        project.write(name, source)
    return project


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []

    def executors(self) -> list[psutil.Process]:
        """Executor processes: the zygote's children (the zygote is the supervisor's child)."""
        out = []
        for zygote in psutil.Process(self.process.pid).children():
            out += [p for p in zygote.children() if p.status() != psutil.STATUS_ZOMBIE]
        return out

    def signal_all(self, sig: int) -> None:
        for proc in [psutil.Process(self.process.pid), *self.tree()]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    def stop(self) -> None:
        everyone = [psutil.Process(self.process.pid), *self.tree()] if self.alive() else []
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for proc in everyone:  # never leave an executor behind, whatever happened
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()

    def alive(self) -> bool:
        return self.process.poll() is None


def start_worker(
    project: Project, name: str = "w", concurrency: int = 2, wait_ready: bool = True, **env: str
) -> WorkerProcess:
    log_path = project.dir / f"worker-{name}-{uuid.uuid4().hex[:4]}.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "worker",
            "--project-dir",
            str(project.dir),
            "--concurrency",
            str(concurrency),
        ],
        env={
            **os.environ,
            "TRIGGER_API_URL": project.api.url,
            "TRIGGER_SECRET_KEY": project.key,
            "WORKER_NAME": name,
            "PYTHONPATH": str(ROOT),
            **env,
        },
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=project.dir,
    )
    worker = WorkerProcess(process, log_path)
    if wait_ready:
        deadline = time.monotonic() + 30
        while "worker ready" not in worker.log():
            if not worker.alive() or time.monotonic() > deadline:
                worker.stop()
                raise RuntimeError(f"worker did not start:\n{worker.log()[-3000:]}")
            time.sleep(0.05)
    return worker


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    """Collects the workers a test starts, and stops them all afterwards."""
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


def trigger(client: httpx.Client, task_id: str, payload: Any = None, **options: Any) -> str:
    reply = client.post(
        f"/api/v1/tasks/{task_id}/trigger", json={"payload": payload, "options": options}
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["id"])


def wait_final(client: httpx.Client, run_id: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = client.get(f"/api/v3/runs/{run_id}").json()
        if run["status"] in FINAL:
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} still {run['status']} after {timeout} s: {run}")
        time.sleep(0.05)


def wait_for(predicate: Any, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
