"""Drive a zygote + its executors directly (no API): the supervisor's building blocks."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from worker.common.protocol import DequeuedRun
from worker.common.serialization import dumps
from worker.runtime.pool import Executor, ExecutorServer, Pool
from worker.runtime.zygote_process import ZygoteProcess


class Harness:
    def __init__(self, project: Path, size: int = 1, **pool_options: Any) -> None:
        self.project = project
        self.size = size
        self.pool_options = pool_options
        self.warnings: list[str] = []
        self.logs: list[dict[str, Any]] = []
        self.exits: list[tuple[int, int | None, int | None]] = []
        # unix socket paths are limited to ~107 bytes: keep it short, not under tmp_path
        self.tmp = tempfile.mkdtemp(prefix="twt-")
        self.server = ExecutorServer(os.path.join(self.tmp, "s"))
        self.pool: Pool | None = None
        self.manifest: dict[str, Any] = {}

    async def __aenter__(self) -> Harness:
        await self.server.start()

        def on_exit(pid: int, code: int | None, sig: int | None) -> None:
            self.exits.append((pid, code, sig))
            if self.pool:
                self.pool.handle_exit(pid, code, sig)

        zygote = ZygoteProcess(self.project, self.server.path, on_exit)
        self.manifest = await zygote.start()
        self.pool = Pool(zygote, self.server, size=self.size, version_id="v1", version="1",
                         on_log=self.logs.append, on_change=lambda: None,
                         on_warning=self.warnings.append, **self.pool_options)
        self.pool.fill()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pool:
            await self.pool.close()
        await self.server.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    async def idle(self, timeout: float = 20.0) -> Executor:
        assert self.pool
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.pool.idle():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("no idle executor")
            await asyncio.sleep(0.01)
        return self.pool.idle()[0]

    async def execute(self, task_id: str, payload: Any = None, **run: Any) -> dict[str, Any]:
        assert self.pool
        ex = await self.idle()
        frame = await self.pool.execute(ex, make_run(task_id, payload, **run))
        completion: dict[str, Any] = frame["completion"]
        return completion

    def messages(self, run_id: str | None = None) -> list[str]:
        return [str(f["message"]) for f in self.logs if run_id is None or f["run_id"] == run_id]


def make_run(task_id: str, payload: Any = None, *, run_id: str = "run_1", attempt: int = 1,
             max_attempts: int = 3, retry: dict[str, Any] | None = None,
             max_duration: float | None = None, env_type: str = "DEVELOPMENT",
             machine: str = "small-1x") -> DequeuedRun:
    data, data_type = dumps(payload)
    return DequeuedRun.from_wire({
        "run_id": run_id, "attempt_number": attempt, "task_id": task_id, "version_id": "v1",
        "version": "1", "payload": data, "payload_type": data_type,
        "max_attempts": max_attempts,
        "retry": retry or {"max_attempts": max_attempts, "min_timeout_ms": 1000, "factor": 2,
                           "randomize": False},
        "max_duration": max_duration, "machine": machine, "is_final_attempt": False,
        "ctx": {"run": {"id": run_id, "tags": []}, "attempt": {"number": attempt},
                "task": {"id": task_id, "file_path": "x.py"}, "queue": {"name": "q"},
                "environment": {"id": "e", "slug": "dev", "type": env_type},
                "project": {"id": "p", "ref": "proj"}, "machine": {"name": machine},
                "batch": None},
    })
