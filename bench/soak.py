"""Chaos soak: a mixed workload under SIGKILLs, SIGSTOPs and a Postgres crash, checked from the
database and from a side-effect ledger the tasks write.

    python -m bench.soak --runs 10000            # the issue's soak (long)
    python -m bench.soak --runs 300 --rate 15    # the suite's version (tests/ops/test_soak.py)

A Postgres cluster of its own (``initdb`` in a private directory, a free port; never the
machine's shared server), 2 API replicas and 3 worker replicas on loopback. Workers use a worker
token on the prod environment. Workload (bench/soak_tasks.py): plain tasks, tasks failing their
first attempt, parents with ``trigger_and_wait`` and ``batch_trigger_and_wait`` children, token
and duration waits that checkpoint, memoised steps, a queue with concurrency limit 2, reused
idempotency keys, a cron schedule. While runs are triggered, every ``--interval`` seconds one
fault at random: SIGKILL an executor, SIGKILL a worker replica (restarted), SIGKILL an API replica
(restarted), SIGSTOP a worker past its lease (then SIGCONT); once, ``kill -9`` of the postmaster
and a restart (crash recovery). Afterwards:

- lost: runs not in a final status once drained (0 expected);
- double success: runs with more than one completed attempt (0);
- step effects after recording: a memoised step's side effect (ledger) that ran again after the
  step was journaled (0);
- queue limit: most ``limited`` runs overlapping in time, from the ledger, counting the attempts
  that completed (≤ 2);
- cron: scheduled ticks with other than exactly one run (0);
- idempotency: keys with more than one run (0);
- orphans: processes of the soak left after it stopped (0).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import psycopg

from bench import common
from bench.soak_tasks import TASKS

ROOT = Path(__file__).resolve().parent.parent
FINAL = ("COMPLETED_SUCCESSFULLY", "COMPLETED_WITH_ERRORS", "CRASHED", "SYSTEM_FAILURE",
         "CANCELED", "EXPIRED", "TIMED_OUT")
EFFECTS_AFTER = """
SELECT l.run_id, l.key, l.attempt, l.started_at, j.created_at
FROM soak_ledger l
JOIN run_journal j ON j.run_id = l.run_id AND j.kind = 'step' AND j.key = l.key
WHERE l.kind = 'effect' AND l.started_at > j.created_at
  AND l.attempt = (SELECT r.attempt FROM soak_ledger r
                   WHERE r.run_id = l.run_id AND r.kind = 'effect' AND r.key = l.key
                     AND r.started_at <= j.created_at
                   ORDER BY r.started_at DESC LIMIT 1)
"""
LEASE = {"TRIGGER_LEASE_SECONDS": "3", "TRIGGER_HEARTBEAT_SECONDS": "0.5",
         "TRIGGER_RESCUER_INTERVAL": "0.5"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    import pgserver  # the embedded Postgres' binaries

    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


class Cluster:
    """A private Postgres: initdb in ``dir``, a free port, killable with SIGKILL."""

    def __init__(self, base: Path) -> None:
        self.dir = base / "pgdata"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.user = "postgres" if os.geteuid() == 0 else None  # postgres refuses root
        self.log = base / "postgres.log"
        self.dir.mkdir()
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (base, self.dir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run([_pg_bin("initdb"), "-D", str(self.dir), "-U", "postgres", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True,
                       user=self.user)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        argv = [_pg_bin("postgres"), "-D", str(self.dir), "-p", str(self.port),
                "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.dir}",
                "-c", "fsync=off", "-c", "max_connections=300", "-c", "shared_buffers=64MB"]
        for _ in range(50):  # after a SIGKILL, old backends may hold shared memory a moment
            self.proc = subprocess.Popen(argv, user=self.user, stdout=self.log.open("ab"),
                                         stderr=subprocess.STDOUT)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.proc.poll() is None:
                with contextlib.suppress(psycopg.Error):
                    psycopg.connect(self.url, connect_timeout=1).close()
                    return
                time.sleep(0.1)
            time.sleep(0.2)
        raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Proc:
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd,
                                        stdout=self.log.open("ab"), stderr=subprocess.STDOUT)

    def tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def signal(self, sig: int) -> None:
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    def kill(self) -> None:
        self.signal(signal.SIGCONT)
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()  # the supervisor only: its executors must not outlive it
            self.process.wait()

    def terminate(self, timeout: float = 30) -> None:
        self.signal(signal.SIGCONT)
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Soak:
    runs: int
    rate: float
    interval: float
    seed: int
    drain_timeout: float
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="soak-")))
    faults: dict[str, int] = field(default_factory=dict)
    triggered: list[str] = field(default_factory=list)
    idem: dict[str, set[str]] = field(default_factory=dict)

    def setup(self) -> None:
        self.cluster = Cluster(self.base)
        self.cluster.start()
        with psycopg.connect(self.cluster.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE soak")
        self.url = self.cluster.url.rsplit("/", 1)[0] + "/soak"
        env = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": self.url,
               "TRIGGER_ENCRYPTION_KEY": "5a" * 32}
        self.env = env
        from worker.engine.keys import create_project, create_worker_token
        from worker.engine.migrate import migrate

        os.environ.setdefault("TRIGGER_ENCRYPTION_KEY", env["TRIGGER_ENCRYPTION_KEY"])
        migrate(self.url)
        self.key = create_project(self.url, "soak")["prod"]
        token = create_worker_token(self.url, "soak", "prod")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("CREATE TABLE soak_ledger (id bigserial, run_id text, attempt int, "
                         "kind text, key text, started_at timestamptz, ended_at timestamptz, "
                         "pid int)")
        project = self.base / "project"
        (project / "trigger").mkdir(parents=True)
        (project / "trigger" / "__init__.py").write_text("")
        (project / "trigger" / "tasks.py").write_text(TASKS)
        (project / "trigger_config.py").write_text(
            "from worker import define_config\n\n"
            "config = define_config(project='soak', dirs=['trigger'], max_duration=60)\n")
        self.project = project
        self.apis: list[Proc] = []
        for i in range(2):
            port = free_port()
            argv = [sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
            "--http", common.HTTP_PROTOCOL,
                    "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
            api = Proc(argv, {**env, **LEASE}, self.base / f"api{i}.log", ROOT)
            api.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
            api.start()
            self.apis.append(api)
        for api in self.apis:
            self._wait_healthy(api)
        self.workers: list[Proc] = []
        for i in range(3):
            api_url = self.apis[i % 2].url  # type: ignore[attr-defined]
            wenv = {**env, "TRIGGER_API_URL": api_url, "TRIGGER_WORKER_TOKEN": token,
                    "TRIGGER_SECRET_KEY": self.key, "SOAK_LEDGER_URL": self.url,
                    "TRIGGER_CHECKPOINT_AFTER": "0.5", "TRIGGER_SHUTDOWN_GRACE": "5"}
            wenv.pop("DATABASE_URL")
            argv = [sys.executable, "-m", "worker", "worker", "--project-dir", str(project),
                    "--concurrency", "4"]
            worker = Proc(argv, wenv, self.base / f"worker{i}.log", project)
            worker.start()
            self.workers.append(worker)
        deadline = time.monotonic() + 60
        while "worker ready" not in "".join(w.log.read_text() for w in self.workers[:1]):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start: " + self.workers[0].log.read_text())
            time.sleep(0.1)
        self.http = httpx.Client(timeout=10, headers={"Authorization": f"Bearer {self.key}"})
        self._call("POST", "/api/v1/schedules",
                   {"task": "ticker", "cron": "* * * * *", "deduplicationKey": "soak"})

    def _wait_healthy(self, api: Proc, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{api.url}/healthz", timeout=1).status_code == 200:  # type: ignore[attr-defined]
                    return
            time.sleep(0.1)
        raise RuntimeError(f"API did not come up: {api.log.read_text()[-2000:]}")

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        """Through either API replica; retried (same request key) while one or Postgres is
        down."""
        request_key = str(uuid.uuid4())
        for attempt in range(200):
            api = self.apis[attempt % 2]
            with contextlib.suppress(httpx.TransportError):
                reply = self.http.request(method, api.url + path, json=body,  # type: ignore[attr-defined]
                                          headers={"x-trigger-request-idempotency-key":
                                                   request_key})
                if reply.status_code < 500:
                    if reply.status_code >= 400:
                        raise RuntimeError(f"{method} {path}: {reply.status_code} {reply.text}")
                    return reply.json()
            time.sleep(0.1)
        raise RuntimeError(f"{method} {path} failed for 20 s")

    # --- workload -------------------------------------------------------------------------

    def trigger_all(self, rng: random.Random) -> None:
        kinds = ["plain"] * 4 + ["flaky"] * 2 + ["limited", "stepper", "waiter", "parent"]
        for i in range(self.runs):
            kind = rng.choice(kinds)
            options: dict[str, Any] = {}
            if kind == "plain" and rng.random() < 0.2:
                options["idempotencyKey"] = key = f"idem-{rng.randrange(8)}"
            run = self._call("POST", f"/api/v1/tasks/{kind}/trigger",
                             {"payload": {"i": i}, "options": options})
            self.triggered.append(run["id"])
            if options:
                self.idem.setdefault(key, set()).add(run["id"])
            time.sleep(1 / self.rate)

    def complete_tokens(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(psycopg.Error):
                with psycopg.connect(self.url, autocommit=True, connect_timeout=2) as conn:
                    ids = [r[0] for r in conn.execute(
                        "SELECT id FROM waitpoints WHERE type = 'TOKEN' AND status = 'WAITING'")]
                for wid in ids:
                    with contextlib.suppress(Exception):
                        self._call("POST", f"/api/v1/waitpoints/tokens/{wid}/complete",
                                   {"data": {"ok": True}})
            stop.wait(0.5)

    # --- faults ---------------------------------------------------------------------------

    def _count(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def inject(self, rng: random.Random, stop: threading.Event) -> None:
        postgres_at = time.monotonic() + 0.4 * self.runs / self.rate
        while not stop.wait(self.interval):
            if not self.faults.get("kill_postgres") and time.monotonic() > postgres_at:
                self.cluster.kill9()
                time.sleep(1)
                self.cluster.start()
                self._count("kill_postgres")
                continue
            kind = rng.choice(["kill_executor"] * 3 + ["kill_worker", "freeze_worker",
                                                        "kill_api"])
            if kind == "kill_executor":
                executors = [p for w in self.workers for p in w.tree()[2:]]
                if executors:
                    with contextlib.suppress(psutil.NoSuchProcess):
                        rng.choice(executors).kill()
                        self._count(kind)
            elif kind == "kill_worker":
                worker = rng.choice(self.workers)
                for proc in worker.tree():  # the whole replica, as a container kill would
                    with contextlib.suppress(psutil.NoSuchProcess):
                        proc.kill()
                worker.process.wait()  # type: ignore[union-attr]
                worker.start()
                self._count(kind)
            elif kind == "freeze_worker":
                worker = rng.choice(self.workers)
                worker.signal(signal.SIGSTOP)
                time.sleep(4.0)  # past the 3 s lease
                worker.signal(signal.SIGCONT)
                self._count(kind)
            else:
                api = rng.choice(self.apis)
                api.kill()
                time.sleep(1.0)
                api.start()
                self._wait_healthy(api)
                self._count(kind)

    # --- checks ---------------------------------------------------------------------------

    def drain(self) -> float:
        started = time.monotonic()
        deadline = started + self.drain_timeout
        with psycopg.connect(self.url, autocommit=True) as conn:
            while time.monotonic() < deadline:
                row = conn.execute("SELECT count(*) FROM runs WHERE NOT status = ANY(%s)",
                                   (list(FINAL),)).fetchone()
                if row and row[0] == 0:
                    break
                time.sleep(0.5)
        return time.monotonic() - started

    def check(self) -> dict[str, Any]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            def one(sql: str, *args: Any) -> Any:
                row = conn.execute(sql, args).fetchone()
                return row[0] if row else None

            statuses = dict(conn.execute("SELECT status, count(*) FROM runs GROUP BY status"
                                         ).fetchall())
            missing = len(set(self.triggered)) - one(
                "SELECT count(*) FROM runs WHERE id = ANY(%s)", list(set(self.triggered)))
            lost = missing + one("SELECT count(*) FROM runs WHERE NOT status = ANY(%s)",
                                 list(FINAL))
            twice = one("SELECT count(*) FROM (SELECT run_id FROM run_attempts WHERE status = "
                        "'COMPLETED' GROUP BY run_id HAVING count(*) > 1) t")
            # a side effect of a step that ran again in the attempt that had recorded it (a
            # resume must replay it); a retry is a new attempt and runs from the top
            # (docs/run-states.md), so its own effect is not counted
            effect_detail = [list(map(str, r)) for r in conn.execute(EFFECTS_AFTER).fetchall()]
            effects_after = len(effect_detail)
            intervals = conn.execute(
                "SELECT l.started_at, l.ended_at FROM soak_ledger l JOIN run_attempts a "
                "ON a.run_id = l.run_id AND a.number = l.attempt AND a.status = 'COMPLETED' "
                "WHERE l.kind = 'limited'").fetchall()
            ticks = conn.execute(
                "SELECT t.tick, count(r.id) FROM schedule_ticks t LEFT JOIN runs r "
                "ON r.id = t.run_id GROUP BY t.tick").fetchall()
            ticker_runs = one("SELECT count(*) FROM runs WHERE task_id = 'ticker'")
            idem_runs = dict(conn.execute(
                "SELECT idempotency_key, count(*) FROM runs WHERE idempotency_key IS NOT NULL "
                "GROUP BY idempotency_key").fetchall())
            total = one("SELECT count(*) FROM runs")
        events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
        running = peak = 0
        for _, step in events:
            running += step
            peak = max(peak, running)
        return {
            "runs_triggered": len(self.triggered), "runs_in_db": total, "statuses": statuses,
            "lost": lost, "double_success": twice, "step_effects_after_recording": effects_after,
            "step_effects_detail": effect_detail[:5],
            "limited_peak_concurrency": peak, "limited_runs_checked": len(intervals),
            "cron_ticks": len(ticks), "cron_ticks_not_once": sum(1 for _, n in ticks if n != 1)
            + abs(ticker_runs - len(ticks)),
            "idempotency_keys_with_more_runs": sum(1 for n in idem_runs.values() if n > 1)
            + sum(1 for ids in self.idem.values() if len(ids) > 1),
            "faults": dict(self.faults),
        }

    def teardown(self) -> int:
        """Stop everything; return how many of the soak's processes are left (orphans)."""
        for worker in self.workers:
            worker.terminate()
        for api in self.apis:
            api.terminate()
        self.cluster.stop()
        time.sleep(0.5)
        marker = str(self.project)
        left = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            with contextlib.suppress(psutil.Error):
                if proc.info["status"] != psutil.STATUS_ZOMBIE and marker in " ".join(
                        proc.info["cmdline"] or []):
                    left.append(proc)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        return len(left)

    def run(self) -> dict[str, Any]:
        rng = random.Random(self.seed)
        try:
            self.setup()
            stop = threading.Event()
            helpers = [threading.Thread(target=self.complete_tokens, args=(stop,), daemon=True),
                       threading.Thread(target=self.inject, args=(random.Random(self.seed + 1),
                                                                  stop), daemon=True)]
            for helper in helpers:
                helper.start()
            started = time.monotonic()
            self.trigger_all(rng)
            stop_faults = helpers[1]
            stop.set()
            stop_faults.join()
            stop.clear()
            helpers[0] = threading.Thread(target=self.complete_tokens, args=(stop,), daemon=True)
            helpers[0].start()
            drained = self.drain()
            stop.set()
            result = self.check()
            result["seconds_triggering"] = round(time.monotonic() - started - drained, 1)
            result["seconds_draining"] = round(drained, 1)
        finally:
            orphans = self.teardown() if hasattr(self, "workers") else 0
            if hasattr(self, "cluster"):
                self.cluster.stop()
        result["orphan_processes"] = orphans
        shutil.rmtree(self.base, ignore_errors=True)
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20.0, help="runs triggered per second")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--drain", type=float, default=300.0)
    args = parser.parse_args(argv)
    result = Soak(args.runs, args.rate, args.interval, args.seed, args.drain).run()
    print(json.dumps(result, indent=2, default=str))
    bad = [k for k in ("lost", "double_success", "step_effects_after_recording",
                       "cron_ticks_not_once", "idempotency_keys_with_more_runs",
                       "orphan_processes") if result[k]]
    if result["limited_peak_concurrency"] > 2:
        bad.append("limited_peak_concurrency")
    print("OK" if not bad else f"FAILED: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
