"""Shared pieces: statistics, process control, service checks, fresh databases."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PROJECT_DIR = BENCH_DIR / "project"
#: the API's HTTP protocol (worker/api/http_protocol.py), for every uvicorn the benchmarks start
HTTP_PROTOCOL = "worker.api.http_protocol:HttpToolsProtocol"

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379"


class Missing(Exception):
    """A service or package a system needs is not there; the message says which and how."""


# --- statistics -------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank-with-interpolation percentile (p in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


@dataclass
class Series:
    """The repetitions of one metric: median and min–max."""

    values: list[float] = field(default_factory=list)

    def add(self, value: float | None) -> None:
        if value is not None:
            self.values.append(float(value))

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    @property
    def lo(self) -> float | None:
        return min(self.values) if self.values else None

    @property
    def hi(self) -> float | None:
        return max(self.values) if self.values else None


# --- machine ------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    load = os.getloadavg()
    return {"nproc": os.cpu_count(), "load": load, "python": sys.version.split()[0]}


# --- processes ----------------------------------------------------------------------------


@dataclass
class Proc:
    """A process the harness started: its own session, so killing its group kills its tree."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    name: str

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree_pids(self) -> list[int]:
        import psutil

        try:
            parent = psutil.Process(self.popen.pid)
            return [parent.pid] + [c.pid for c in parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (graceful), then SIGKILL the whole group and every descendant we saw."""
        import psutil

        pids = self.tree_pids()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                psutil.Process(pid).kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def spawn(name: str, argv: list[str], log_dir: Path, env: dict[str, str] | None = None,
          cwd: Path | None = None) -> Proc:
    log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), **(env or {})}
    with log_path.open("ab") as out:
        popen = subprocess.Popen(argv, env=full_env, stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, cwd=str(cwd or ROOT),
                                 start_new_session=True)
    return Proc(popen, log_path, name)


class Procs:
    """Every process started in a scope; all are stopped when it ends, whatever happened."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.items.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            with contextlib.suppress(Exception):
                proc.stop()
        self.items.clear()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.005, proc: Proc | None = None) -> Any:
    """Poll ``predicate`` until truthy; bounded in time. Raises TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and not proc.alive():
            raise RuntimeError(
                f"{proc.name} exited while waiting for {what}:\n{proc.log()[-3000:]}")
        if time.monotonic() > deadline:
            tail = f"\n{proc.name} log:\n{proc.log()[-3000:]}" if proc else ""
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}{tail}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_api(procs: Procs, db_url: str, log_dir: Path) -> tuple[Proc, str]:
    """One API process (uvicorn) on ``db_url`` on a free port, healthy; (its Proc, its URL)."""
    import urllib.request

    port = free_port()
    api = procs.add(spawn("api", [
        sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
            "--http", HTTP_PROTOCOL,
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
        "--no-access-log"], log_dir, env={"DATABASE_URL": db_url,
                                          "TRIGGER_ENCRYPTION_KEY": "5a" * 32}))
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as reply:
                return bool(reply.status == 200)
        except OSError:
            return False

    wait_until(healthy, 30, "the API", interval=0.05, proc=api)
    return api, url


# --- services -----------------------------------------------------------------------------


def check_postgres(url: str) -> None:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        raise Missing(f"Postgres is not reachable at {url} ({type(exc).__name__}: "
                      f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}); "
                      "start it or pass --pg URL") from None


def check_redis(url: str) -> None:
    try:
        import redis
    except ImportError:
        raise Missing("the 'redis' package is missing: pip install -e '.[bench]'") from None
    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except Exception as exc:
        raise Missing(f"Redis is not reachable at {url} ({type(exc).__name__}: {exc}); "
                      "start it or pass --redis URL") from None


def with_database(url: str, dbname: str) -> str:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


@contextlib.contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """CREATE a uniquely named database, yield its URL, DROP it (FORCE) afterwards."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def memory_of(pid: int) -> dict[str, float]:
    """USS, PSS and RSS in MiB (Linux smaps via psutil)."""
    import psutil

    info = psutil.Process(pid).memory_full_info()
    mib = 1024 * 1024
    return {"uss": info.uss / mib, "pss": getattr(info, "pss", 0) / mib, "rss": info.rss / mib}
