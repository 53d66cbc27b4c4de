"""Shared fixtures: a real Postgres (DATABASE_URL, or the embedded pgserver), a real API server
process, a project with its secret keys.

Every test session gets its own fresh database, so the suite never touches existing data.
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from worker.api.http_protocol import NAME as HTTP_PROTOCOL
from worker.engine.keys import create_project
from worker.engine.migrate import migrate

ROOT = Path(__file__).resolve().parent.parent
# The server's encryption key (worker/engine/secret_box.py), for this process (which registers
# keys) and the API processes it starts.
os.environ.setdefault("TRIGGER_ENCRYPTION_KEY", "7e" * 32)


def _server_url() -> tuple[str, object | None]:
    """A Postgres server URL: DATABASE_URL if set, else an embedded pgserver."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    from worker import embedded_pg

    data = Path(os.environ.get("TRIGGER_TEST_PGDATA") or default_test_pgdata())
    server = embedded_pg.start(data, shared=True)
    return server.url, server


def default_test_pgdata() -> str:
    """One embedded server folder per checkout (and user): two clones never share one."""
    checkout = hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]
    return f"/tmp/trigger-test-pg-{os.getuid()}-{checkout}"


def _with_database(url: str, dbname: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    server_url, server = _server_url()
    dbname = f"trigger_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
        # a throwaway database: no need to wait for the disk at every commit
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    url = _with_database(server_url, dbname)
    migrate(url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    del server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ApiServer:
    url: str
    database_url: str
    process: subprocess.Popen[bytes]
    keys: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def secret_key(self) -> str:
        return self.keys["dev"]

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.secret_key}"}

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.headers(), timeout=30)


def start_api(database_url: str, log_path: Path, *, log_level: str = "warning",
              **env: str) -> ApiServer:
    """An API process of its own on ``database_url``, healthy (``log_level="info"``: with its
    access log); ``env``: extra environment variables."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "worker.api.app:create_app",
            "--http",
            HTTP_PROTOCOL,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            log_level,
        ],
        env={**os.environ, "DATABASE_URL": database_url, **env},
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"API exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return ApiServer(url, database_url, process, log_path=log_path)
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("API did not become healthy in 30 s")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="session")
def api_server(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """One API process for the session, with short leases so rescue tests run quickly."""
    log_path = tmp_path_factory.mktemp("api") / "api.log"
    server = start_api(
        database_url,
        log_path,
        TRIGGER_LEASE_SECONDS="3",
        TRIGGER_HEARTBEAT_SECONDS="0.5",
        TRIGGER_RESCUER_INTERVAL="0.5",
    )
    server.keys = create_project(database_url, "test-project")
    yield server
    stop_process(server.process)


@pytest.fixture
def project_keys(api_server: ApiServer) -> dict[str, str]:
    """A fresh project (so tasks and runs of one test never meet another's)."""
    return create_project(api_server.database_url, f"p-{uuid.uuid4().hex[:8]}")
