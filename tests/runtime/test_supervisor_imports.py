"""The supervisor process (``trigger worker``) never imports httpx for an http:// API: its worker
protocol client is worker/sdk/http1.py (httpx, httpcore and anyio were ~45 % of its CPU
and ~10 MiB of its memory)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT, ApiServer
from tests.runtime.projects import write_project

TASKS = """
from worker.sdk.task import task


@task(id="imports-echo")
async def echo(payload):
    return payload
"""

# runs `python -m worker worker` and, as the process exits, prints the HTTP modules it loaded
LAUNCH = """
import atexit, runpy, sys

def report():
    # (lean_imports puts an empty stand-in, with no spec, for httpx's CLI module)
    loaded = sorted(m for m, module in sys.modules.items()
                    if m.split(".")[0] in ("httpx", "httpcore", "h11") and module.__spec__)
    print("HTTP-MODULES", ",".join(loaded) or "-", flush=True)

atexit.register(report)
sys.argv = ["trigger", "worker", "--project-dir", sys.argv[1], "--concurrency", "1"]
runpy.run_module("worker", run_name="__main__", alter_sys=True)
"""


def test_the_supervisor_runs_without_httpx(api_server: ApiServer, project_keys: dict[str, str],
                                           tmp_path: Path) -> None:
    project = write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})
    key = project_keys["dev"]
    env = {**os.environ, "TRIGGER_API_URL": api_server.url, "TRIGGER_SECRET_KEY": key,
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY",
                 "all_proxy"):
        env.pop(name, None)
    log = tmp_path / "worker.log"
    worker = subprocess.Popen([sys.executable, "-c", LAUNCH, str(project)], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)
    try:
        with api_server.client() as client:
            client.headers["Authorization"] = f"Bearer {key}"
            deadline = time.monotonic() + 60
            run_id = None
            status = None
            while time.monotonic() < deadline and status != "COMPLETED":
                assert worker.poll() is None, log.read_text()[-3000:]
                if run_id is None:
                    reply = client.post("/api/v1/tasks/imports-echo/trigger",
                                        json={"payload": {"n": 1}})
                    if reply.status_code == 200:
                        run_id = reply.json()["id"]
                else:
                    status = client.get(f"/api/v3/runs/{run_id}").json()["status"]
                time.sleep(0.1)
            assert status == "COMPLETED", log.read_text()[-3000:]
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    (line,) = [line for line in out.splitlines() if line.startswith("HTTP-MODULES")]
    assert line == "HTTP-MODULES -", line
