"""`trigger dev`: embedded (or given) Postgres + API process + worker with hot reload."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import uvloop

from worker.console import DevConsole
from worker.engine import secret_box
from worker.engine.keys import create_project
from worker.engine.migrate import migrate

STATE_DIR = ".trigger"


def embedded_database(project_dir: Path) -> tuple[str, Any]:
    """Start (or reuse) the embedded Postgres whose data lives in ``.trigger/pgdata``."""
    import pgserver

    data = project_dir / STATE_DIR / "pgdata"
    data.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(data), cleanup_mode="stop")
    return server.get_uri(), server


def dev_encryption_key(project_dir: Path) -> None:
    """Set ``TRIGGER_ENCRYPTION_KEY`` (worker/engine/secret_box.py) unless the environment has
    one: generated once and kept in ``.trigger/encryption.key``."""
    if os.environ.get(secret_box.ENV_VAR):
        return
    path = project_dir / STATE_DIR / "encryption.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secret_box.new_key())
        path.chmod(0o600)
    os.environ[secret_box.ENV_VAR] = path.read_text().strip()


def dev_keys(project_dir: Path, database_url: str, project_ref: str) -> dict[str, str]:
    """The project's keys, kept in ``.trigger/keys.json`` so they survive restarts."""
    dev_encryption_key(project_dir)
    path = project_dir / STATE_DIR / "keys.json"
    saved: dict[str, str] = {}
    if path.exists():
        saved = json.loads(path.read_text()).get(project_ref, {})
    keys = create_project(database_url, project_ref, saved)
    path.parent.mkdir(parents=True, exist_ok=True)
    existing = json.loads(path.read_text()) if path.exists() else {}
    existing[project_ref] = keys
    path.write_text(json.dumps(existing, indent=2))
    path.chmod(0o600)
    return keys


def start_api_process(database_url: str, host: str, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "worker.api.app:create_app",
            "--host",
            host,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "DATABASE_URL": database_url},
        start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
    )


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the API process exited with code {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"the API did not answer on {url} within {timeout:.0f} s")


def run_dev(project_dir: Path, port: int, concurrency: int | None) -> int:
    from worker.runtime.discovery import load_config
    from worker.runtime.supervisor import run_worker

    project_dir = project_dir.resolve()
    config = load_config(project_dir)
    console = DevConsole(f"http://127.0.0.1:{port}")
    server = None
    database_url = os.environ.get("DATABASE_URL")
    if database_url:
        console.line("using DATABASE_URL")
    else:
        console.line(f"starting embedded Postgres in {project_dir / STATE_DIR / 'pgdata'}")
        database_url, server = embedded_database(project_dir)
    migrate(database_url)
    keys = dev_keys(project_dir, database_url, config.project)
    api = start_api_process(database_url, "127.0.0.1", port)
    api_url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(api_url, api)
        console.line(f"API        [bold]{api_url}[/bold]  (OpenAPI: {api_url}/docs)")
        console.line(f"project    [bold]{config.project}[/bold]  environment dev")
        console.line(f"secret key [bold]{keys['dev']}[/bold]  (TRIGGER_SECRET_KEY)")
        os.environ["TRIGGER_API_URL"] = api_url
        os.environ["TRIGGER_SECRET_KEY"] = keys["dev"]
        uvloop.run(
            _serve_worker(run_worker, project_dir, api_url, keys["dev"], concurrency, console)
        )
    finally:
        if api.poll() is None:
            api.terminate()
            try:
                api.wait(10)
            except subprocess.TimeoutExpired:
                api.kill()
        del server  # pgserver stops the embedded Postgres when its last handle goes
    return 0


async def _serve_worker(
    run_worker: Any,
    project_dir: Path,
    api_url: str,
    key: str,
    concurrency: int | None,
    console: DevConsole,
) -> None:
    stop, force = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if stop.is_set():  # a second Ctrl-C: stop at once, still handing leases back
            force.set()
            return
        console.line("stopping (Ctrl-C again to stop at once)…")
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    await run_worker(
        project_dir,
        api_url,
        key,
        concurrency=concurrency,
        watch=True,
        on_event=console.event,
        stop=stop,
    )
