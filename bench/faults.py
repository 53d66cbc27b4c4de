"""Fault injection: runs that wait, fail and trigger children, under SIGKILLs and SIGSTOPs.

    python -m bench.faults --runs 300 [--code DIR] [--seed 7]

Two API replicas and three worker replicas (each pointed at one API) on a fresh database of the
shared Postgres (never killed). While runs are triggered, every ``--interval`` seconds one
fault: SIGKILL of an executor, SIGKILL of a whole worker (restarted), SIGSTOP of a whole worker
past its lease (then SIGCONT), SIGKILL of an API replica (restarted 2.5 s later). Then the runs
drain without faults, and the database is checked:

- lost: a triggered run not in a final status once drained;
- recorded twice: a run with more than one completed attempt;
- false NON_DETERMINISTIC: a run or attempt whose error says NON_DETERMINISTIC (every task here
  is deterministic, so each one is false);
- reconnect (measured after the drain, 3 times): API replica 0 is killed for 2.5 s while runs
  queue up; once it is healthy again, how long until a worker pointed at it starts one.

``--code`` runs the API and the workers from another checkout (e.g. main's, for "before"); the
database is migrated by that code too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
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
from bench.common import DEFAULT_PG, ROOT, percentile

TASKS = '''
import time
from worker import task, wait, step

RETRY = {"max_attempts": 5, "min_timeout_ms": 200, "max_timeout_ms": 1000, "factor": 2}


@task(id="nap", retry=RETRY)
async def nap(payload, ctx):
    # the case of issue 18: a checkpointing wait, then (sometimes) an exception on attempt 1
    before = await step("before", lambda: ctx.attempt.number)
    await wait.for_(seconds=5.5)
    if payload["raise"] and ctx.attempt.number == 1:
        raise RuntimeError("attempt 1 fails after its wait")
    return {"before": before, "attempt": ctx.attempt.number}


@task(id="parent", retry=RETRY)
async def parent(payload, ctx):
    fail = payload["child_fails"] and ctx.attempt.number == 1
    result = await child.trigger_and_wait({"fail": fail})
    return result.unwrap()


@task(id="child", retry={"max_attempts": 1})
async def child(payload, ctx):
    time.sleep(0.3)
    if payload["fail"]:
        raise ValueError("the child fails")
    return "child ok"


@task(id="quick", retry=RETRY)
async def quick(payload, ctx):
    time.sleep(0.2)
    return payload
'''

FINAL = (
    "COMPLETED_SUCCESSFULLY",
    "COMPLETED_WITH_ERRORS",
    "CRASHED",
    "SYSTEM_FAILURE",
    "CANCELED",
    "EXPIRED",
    "TIMED_OUT",
)


def _env(code: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(code), **extra}


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Api:
    code: Path
    database_url: str
    log: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = _env(
            self.code,
            DATABASE_URL=self.database_url,
            TRIGGER_LEASE_SECONDS="3",
            TRIGGER_HEARTBEAT_SECONDS="0.5",
            TRIGGER_RESCUER_INTERVAL="0.5",
        )
        argv = [sys.executable, "-m", "uvicorn", "--factory", "worker.api.app:create_app",
            "--http", common.HTTP_PROTOCOL]
        argv += ["--port", str(self.port), "--log-level", "warning"]
        self.process = subprocess.Popen(
            argv, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=self.code
        )

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def wait_healthy(self, timeout: float = 30) -> float:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"API did not come up: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)
        return time.time()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


@dataclass
class Worker:
    code: Path
    project: Path
    api: Api
    key: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = [sys.executable, "-m", "worker", "worker", "--project-dir", str(self.project)]
        argv += ["--concurrency", "4"]
        env = _env(self.code, TRIGGER_API_URL=self.api.url, TRIGGER_SECRET_KEY=self.key)
        self.process = subprocess.Popen(
            argv, env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, cwd=self.project
        )

    def tree(self) -> list[psutil.Process]:
        if self.process is None:
            return []
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def executors(self) -> list[psutil.Process]:
        found: list[psutil.Process] = []
        if self.process is None:
            return found
        with contextlib.suppress(psutil.NoSuchProcess):
            for zygote in psutil.Process(self.process.pid).children():
                found += [p for p in zygote.children() if p.status() != psutil.STATUS_ZOMBIE]
        return found

    def signal(self, sig: int) -> None:
        for proc in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(sig)

    def stop(self) -> None:
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()


@dataclass
class Counts:
    faults: dict[str, int] = field(default_factory=dict)
    reconnect_s: list[float] = field(default_factory=list)

    def add(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1


def _psql(url: str, code: Path, script: str) -> str:
    """Run Python against ``code`` (the checkout under test) with DATABASE_URL=url."""
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=_env(code, DATABASE_URL=url),
        cwd=code,  # `python -c` puts the working directory first on sys.path
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip()


def _prepare(server_url: str, code: Path, ref: str) -> tuple[str, str]:
    dbname = f"faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
        conn.execute(f'ALTER DATABASE "{dbname}" SET synchronous_commit = off')
    info = psycopg.conninfo.conninfo_to_dict(server_url)
    info["dbname"] = dbname
    url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    key = _psql(
        url,
        code,
        "import os; from worker.engine.migrate import migrate; "
        "from worker.engine.keys import create_project; "
        "migrate(os.environ['DATABASE_URL']); "
        f"print(create_project(os.environ['DATABASE_URL'], {ref!r})['dev'])",
    )
    return url, key


def _instances(conn: psycopg.Connection[Any], pids: list[int]) -> list[str]:
    rows = conn.execute(
        "SELECT instance_id::text FROM workers WHERE (metadata->>'pid')::int = ANY(%s)", (pids,)
    ).fetchall()
    return [r[0] for r in rows]


def _reconnect_probe(
    apis: list[Api], workers: list[Worker], url: str, client: httpx.Client, counts: Counts
) -> None:
    """Kill API 0 for 2.5 s while runs queue up through API 1 (whose only worker is frozen, so
    the runs wait); once API 0 is healthy again, time how long its workers take to start one."""
    others = [w for w in workers if w.api is not apis[0]]
    for worker in others:
        worker.signal(signal.SIGSTOP)
    try:
        apis[0].kill()
        rng = random.Random(0)
        for _ in range(10):
            _trigger(client, rng, "quick")
        time.sleep(2.5)
        apis[0].start()
        back = apis[0].wait_healthy()
        _reconnect(url, [w for w in workers if w.api is apis[0]], back, counts)
    finally:
        for worker in others:
            worker.signal(signal.SIGCONT)


def _reconnect(url: str, workers: list[Worker], since: float, counts: Counts) -> None:
    """Seconds from ``since`` (the API healthy again) to the next attempt its workers start."""
    pids = [w.process.pid for w in workers if w.process is not None]
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT extract(epoch FROM min(started_at)) FROM run_attempts "
                "WHERE worker_instance::text = ANY(%s) AND started_at > to_timestamp(%s)",
                (_instances(conn, pids), since),
            ).fetchone()
            if row and row[0] is not None:
                counts.reconnect_s.append(float(row[0]) - since)
                return
            time.sleep(0.1)


def _inject(
    rng: random.Random,
    apis: list[Api],
    workers: list[Worker],
    counts: Counts,
    url: str,
    busy: threading.Event,
) -> None:
    kinds = ["kill_executor"] * 4 + ["kill_worker", "freeze_worker", "kill_api"]
    kind = rng.choice(kinds)
    if kind == "kill_executor":
        executors = [e for w in workers for e in w.executors()]
        if executors:
            with contextlib.suppress(psutil.NoSuchProcess):
                rng.choice(executors).kill()
                counts.add(kind)
        return
    if busy.is_set():  # one worker or API down at a time
        return
    busy.set()

    def later() -> None:
        try:
            if kind == "kill_worker":
                worker = rng.choice(workers)
                worker.stop()
                time.sleep(0.5)
                worker.start()
            elif kind == "freeze_worker":
                worker = rng.choice(workers)
                worker.signal(signal.SIGSTOP)
                time.sleep(4.5)  # past the 3 s lease
                worker.signal(signal.SIGCONT)
            else:
                api = rng.choice(apis)
                api.kill()
                time.sleep(2.5)
                api.start()
                api.wait_healthy()
            counts.add(kind)
        finally:
            busy.clear()

    threading.Thread(target=later, daemon=True).start()


def _trigger(client: httpx.Client, rng: random.Random, kind: str | None = None) -> str:
    kind = kind or rng.choices(["nap", "parent", "quick"], weights=[4, 2, 4])[0]
    payloads: dict[str, dict[str, Any]] = {
        "nap": {"raise": rng.random() < 0.3},
        "parent": {"child_fails": rng.random() < 0.3},
        "quick": {"n": rng.randrange(1000)},
    }
    payload = payloads[kind]
    for _ in range(50):  # an API may be down right now: retry (same key, one run)
        with contextlib.suppress(httpx.TransportError):
            reply = client.post(
                f"/api/v1/tasks/{kind}/trigger",
                json={"payload": payload},
                headers={"x-trigger-request-idempotency-key": str(uuid.uuid4())},
            )
            if reply.status_code == 200:
                return str(reply.json()["id"])
        time.sleep(0.2)
    raise RuntimeError("could not trigger")


def _check(url: str, run_ids: list[str]) -> dict[str, Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT r.id, r.status, r.error::text, "
            "  (SELECT count(*) FROM run_attempts a WHERE a.run_id = r.id "
            "     AND a.status = 'COMPLETED') AS completed_attempts, "
            "  (SELECT string_agg(coalesce(a.error::text, ''), ' ') FROM run_attempts a "
            "     WHERE a.run_id = r.id) AS attempt_errors "
            "FROM runs r WHERE r.id = ANY(%s)",
            (run_ids,),
        ).fetchall()
    statuses: dict[str, int] = {}
    errors: dict[str, int] = {}
    lost = len(run_ids) - len(rows)
    twice = nondeterministic = 0
    for _, status, error, completed, attempt_errors in rows:
        statuses[status] = statuses.get(status, 0) + 1
        if status != "COMPLETED_SUCCESSFULLY" and error:
            message = str(json.loads(error).get("message", error))[:40]
            errors[message] = errors.get(message, 0) + 1
        lost += status not in FINAL
        twice += completed > 1
        nondeterministic += "NON_DETERMINISTIC" in f"{error} {attempt_errors}"
    return {
        "runs": len(run_ids),
        "statuses": statuses,
        "lost": lost,
        "recorded_twice": twice,
        "false_non_deterministic": nondeterministic,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:8]),
    }


def _drain(url: str, run_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT count(*) FROM runs WHERE id = ANY(%s) AND NOT status = ANY(%s)",
                (run_ids, list(FINAL)),
            ).fetchone()
            if row and row[0] == 0:
                return
            time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=6.0, help="runs triggered per second")
    parser.add_argument("--interval", type=float, default=1.5, help="seconds between faults")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout to run")
    parser.add_argument("--database", default=os.environ.get("DATABASE_URL", DEFAULT_PG))
    parser.add_argument("--drain", type=float, default=120.0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    code = args.code.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="faults-"))
    ref = f"faults-{uuid.uuid4().hex[:6]}"
    url, key = _prepare(args.database, code, ref)
    project = tmp / "project"
    (project / "trigger").mkdir(parents=True)
    (project / "trigger" / "__init__.py").write_text("")
    (project / "trigger" / "tasks.py").write_text(TASKS)
    (project / "trigger_config.py").write_text(
        "from worker import define_config\n\n"
        f"config = define_config(project={ref!r}, dirs=['trigger'], max_duration=60)\n"
    )
    apis = [Api(code, url, tmp / f"api-{i}.log") for i in range(2)]
    workers: list[Worker] = []
    counts = Counts()
    busy = threading.Event()
    try:
        for api in apis:
            api.start()
        for api in apis:
            api.wait_healthy()
        for i in range(3):
            worker = Worker(code, project, apis[i % 2], key, tmp / f"worker-{i}.log")
            worker.start()
            workers.append(worker)
        time.sleep(4)  # registered and warm
        run_ids: list[str] = []
        started = time.monotonic()
        next_fault = started + args.interval
        with httpx.Client(
            base_url=apis[0].url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as first, httpx.Client(
            base_url=apis[1].url, headers={"Authorization": f"Bearer {key}"}, timeout=10
        ) as second:
            while len(run_ids) < args.runs:
                client = first if apis[0].healthy() else second
                run_ids.append(_trigger(client, rng))
                now = time.monotonic()
                if now >= next_fault:
                    _inject(rng, apis, workers, counts, url, busy)
                    next_fault = now + args.interval
                time.sleep(max(0.0, started + len(run_ids) / args.rate - time.monotonic()))
            while busy.is_set():
                time.sleep(0.1)
            _drain(url, run_ids, args.drain)
            result = _check(url, run_ids)
            for _ in range(3):
                _reconnect_probe(apis, workers, url, second, counts)
        result["faults"] = counts.faults
        if counts.reconnect_s:
            result["reconnect_s"] = {
                "n": len(counts.reconnect_s),
                "median": round(percentile(counts.reconnect_s, 50), 2),
                "max": round(max(counts.reconnect_s), 2),
            }
        result["code"] = str(code)
        print(json.dumps(result, indent=2))
    finally:
        for worker in workers:
            worker.stop()
        for api in apis:
            api.kill()
        dbname = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
        with contextlib.suppress(Exception), psycopg.connect(
            args.database, autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
