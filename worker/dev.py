"""`trigger dev`: embedded (or given) Postgres + API process + worker with hot reload.

Every way of stopping it stops everything it started: Ctrl-C, SIGTERM and SIGHUP (a closed
terminal) shut down gracefully; if ``trigger dev`` itself dies (``kill -9``) the API and the
zygote die with it (``PR_SET_PDEATHSIG``) and :mod:`worker.devwatch` stops the embedded
Postgres.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import IO

from worker.cli_settings import CliSettings
from worker.common.conventions import CONFIG_FILE
from worker.common.settings import env_str
from worker.console import DevConsole
from worker.runtime.zygote import set_parent_death_signal

STATE_DIR = ".trigger"
#: the database ``trigger dev`` gives task code on its embedded Postgres
TASKS_DATABASE = "tasks"


class DevError(SystemExit):
    """An expected failure: one line for the user, no traceback."""


def state_dir(project_dir: Path) -> Path:
    """``.trigger/`` (private: it holds the dev key and the database), git-ignored by itself."""
    path = project_dir / STATE_DIR
    path.mkdir(mode=0o700, exist_ok=True)
    ignore = path / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# written by `trigger dev`: the dev key and the embedded database\n*\n")
    return path


def dev_encryption_key(project_dir: Path) -> None:
    """Set ``TRIGGER_ENCRYPTION_KEY`` (worker/engine/secret_box.py) unless the environment has
    one: generated once and kept in ``.trigger/encryption.key`` (mode 0600 from its creation)."""
    from worker.engine import secret_box

    if env_str(secret_box.ENV_VAR):
        return
    path = state_dir(project_dir) / "encryption.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secret_box.new_key())
    os.environ[secret_box.ENV_VAR] = path.read_text().strip()


def dev_keys(project_dir: Path, database_url: str, project_ref: str) -> dict[str, str]:
    """The project's keys, kept in ``.trigger/keys.json`` (mode 0600 from its creation)."""
    from worker.engine.keys import create_project

    dev_encryption_key(project_dir)
    path = state_dir(project_dir) / "keys.json"
    # {project ref: {environment slug: key}}
    existing: dict[str, dict[str, str]] = json.loads(path.read_text()) if path.exists() else {}
    keys = create_project(database_url, project_ref, existing.get(project_ref, {}))
    existing[project_ref] = keys
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file made by an older version may be wider
    with os.fdopen(fd, "w") as out:
        out.write(json.dumps(existing, indent=2))
    return keys


def lock_project(project_dir: Path) -> IO[str]:
    """One ``trigger dev`` per project: both would share (and stop) one embedded Postgres."""
    handle = (state_dir(project_dir) / "dev.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        pid = handle.read().strip() or "?"
        handle.close()
        raise DevError(
            f"another trigger dev (pid {pid}) is running in {project_dir}; stop it first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def port_holder(port: int) -> str:
    """Who listens on ``port``, as ``pid N (command line)``, or "" when it cannot be told."""
    import psutil

    with contextlib.suppress(Exception):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid is None:
                    return "another user's process"
                proc = psutil.Process(conn.pid)
                command = " ".join(proc.cmdline())[:120]
                return f"pid {conn.pid} ({command})"
    return ""


def choose_port(host: str, port: int) -> int:
    """``port`` if it is free (0: any free one); otherwise one line naming who holds it."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind((host, port))
        except OSError:
            holder = port_holder(port)
            raise DevError(
                f"port {port} is already in use{' by ' + holder if holder else ''}: stop it, or "
                "pick another port with --port N (--port 0 picks a free one)"
            ) from None
        return int(sock.getsockname()[1])


def start_api_process(
    database_url: str, host: str, port: int, cwd: Path
) -> subprocess.Popen[bytes]:
    from worker.api.http_protocol import NAME as HTTP_PROTOCOL

    return subprocess.Popen(
        [
            sys.executable,
            "-P",  # never the project folder first on sys.path: a user's worker.py is not us
            "-m",
            "uvicorn",
            "--factory",
            "worker.api.app:create_app",
            "--http",
            HTTP_PROTOCOL,  # a response's head and body in one send
            "--host",
            host,
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, "DATABASE_URL": database_url},
        cwd=cwd,  # uvicorn puts its working folder on sys.path (--app-dir .)
        start_new_session=True,  # Ctrl-C reaches us only; we stop it in order
        preexec_fn=lambda: set_parent_death_signal(signal.SIGTERM),
    )


def _listens(pid: int, port: int) -> bool:
    import psutil

    with contextlib.suppress(Exception):
        proc = psutil.Process(pid)
        conns = proc.net_connections("tcp") if hasattr(proc, "net_connections") else []
        return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in conns)
    return True  # cannot tell (permissions): trust the health check


def wait_healthy(url: str, port: int, process: subprocess.Popen[bytes],
                 timeout: float = 30) -> None:
    """Until *our* API process answers (another server on the port does not count)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DevError(f"the API process exited with code {process.returncode}")
        with contextlib.suppress(httpx.TransportError):
            if (httpx.get(f"{url}/healthz", timeout=1).status_code == 200
                    and _listens(process.pid, port)):
                return
        time.sleep(0.1)
    raise DevError(f"the API did not answer on {url} within {timeout:.0f} s")


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_process(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_dev(project_dir: Path, settings: CliSettings, concurrency: int | None) -> int:
    from worker.runtime.discovery import DiscoveryError, load_config

    project_dir = project_dir.resolve()
    if not (project_dir / CONFIG_FILE).is_file():
        raise DevError(f"no {CONFIG_FILE} in {project_dir}: run 'trigger init' to create a project "
                       "here, or pass --project-dir")
    try:
        config = load_config(project_dir)
    except DiscoveryError as exc:
        raise DevError(str(exc)) from None
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if missing:
        from worker.embedded_pg import INSTALL_HINT

        raise DevError(f"trigger dev runs the API, which needs {' and '.join(missing)}: "
                       f"{INSTALL_HINT}")
    # SIGTERM and SIGHUP (a closed terminal) stop us like Ctrl-C, at every stage; so does the
    # death of our parent (Linux), which would otherwise leave us running with no terminal.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_interrupt)
    set_parent_death_signal(signal.SIGTERM)
    lock = lock_project(project_dir)
    host = "127.0.0.1"
    port = choose_port(host, settings.dev_port)
    api_url = f"http://{host}:{port}"
    console = DevConsole(api_url)
    pg = None
    api = None
    watchdog = None
    code = 0
    try:
        database_url = settings.database_url
        tasks_url = settings.tasks_database_url or database_url
        data = None if database_url else state_dir(project_dir) / "pgdata"
        # first of all, so that nothing we start can outlive us
        watchdog = _start_watchdog(project_dir, data)
        if data is None:
            console.line("using DATABASE_URL")
        else:
            from worker import embedded_pg

            console.line(f"starting embedded Postgres in {data}")
            try:
                pg = embedded_pg.start(data)
            except embedded_pg.EmbeddedPostgresUnavailable as exc:
                raise DevError(str(exc)) from None
            database_url = pg.url
            tasks_url = settings.tasks_database_url or embedded_pg.ensure_database(
                pg.url, TASKS_DATABASE)
        assert database_url is not None
        from worker.engine.migrate import migrate

        migrate(database_url)
        keys = dev_keys(project_dir, database_url, config.project)
        api = start_api_process(database_url, host, port, state_dir(project_dir))
        if watchdog.stdin is not None:
            watchdog.stdin.write(f"api {api.pid}\n".encode())
            watchdog.stdin.flush()
        wait_healthy(api_url, port, api)
        console.line(f"API        [bold]{api_url}[/bold]  (OpenAPI: {api_url}/docs)")
        console.line(f"project    [bold]{config.project}[/bold]  environment dev")
        console.line(f"secret key [bold]{keys['dev']}[/bold]  (TRIGGER_SECRET_KEY)")
        if pg is not None:
            console.line(f"tasks DB   [bold]{tasks_url}[/bold]  (TASKS_DATABASE_URL)")
        from worker.api.dashboard.access import create_login_link

        console.line(f"dashboard  [bold]{create_login_link(database_url, api_url)}[/bold]")
        # the worker's executors (and the SDK in them) read these
        os.environ["TRIGGER_API_URL"] = api_url
        os.environ["TRIGGER_SECRET_KEY"] = keys["dev"]
        if tasks_url:
            # executors inherit these: worker.db connects task code to its own database
            os.environ["TASKS_DATABASE_URL"] = tasks_url
            os.environ["DATABASE_URL"] = tasks_url
        code = _serve(project_dir, api_url, keys["dev"], concurrency, console)
    except KeyboardInterrupt:
        code = 0
    finally:
        # a second signal during cleanup must not cut it short
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        _stop_process(api)
        if pg is not None:
            pg.stop()
        if watchdog is not None:
            with contextlib.suppress(OSError):
                assert watchdog.stdin is not None
                watchdog.stdin.write(b"done\n")
                watchdog.stdin.close()
        lock.close()
    return code


def _start_watchdog(project_dir: Path, pgdata: Path | None) -> subprocess.Popen[bytes]:
    """:mod:`worker.devwatch`: cleans up after us if we die without cleaning up ourselves."""
    extra = ["--pgdata", str(pgdata)] if pgdata is not None else []
    return subprocess.Popen(
        [sys.executable, "-P", "-m", "worker.devwatch", *extra],
        stdin=subprocess.PIPE,
        start_new_session=True,
        cwd=state_dir(project_dir),
    )


def _serve(project_dir: Path, api_url: str, key: str, concurrency: int | None,
           console: DevConsole) -> int:
    import uvloop

    from worker.runtime.worker_main import run_worker
    from worker.runtime.zygote_process import DiscoveryFailed

    async def main() -> None:
        stop, force = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()

        def on_signal() -> None:
            if stop.is_set():  # a second Ctrl-C: stop at once, still handing leases back
                force.set()
                return
            console.line("stopping (Ctrl-C again to stop at once)…")
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, on_signal)
        await run_worker(project_dir, api_url, key, concurrency=concurrency, watch=True,
                         on_event=console.event, stop=stop, force=force)

    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())
    except DiscoveryFailed as exc:
        console.line(f"[red]✖ the project cannot be loaded:[/red] {exc}")
        return 1
    return 0
