"""``python -m bench.api_cpu``: the API's cost per request, route by route.

One API process (uvicorn) on a fresh database and a protocol-level client (no worker process)
sending N cycles of requests, one at a time; for each kind of request: the API process's CPU
time (p50 of per-request deltas of /proc/<pid>/task/*/schedstat, so load-robust), the Postgres
backends' CPU and the client's wall-clock p50.

Requests: ``/healthz`` (no auth), an authenticated 404, trigger (without and, as the SDKs send
it, with a request key), dequeue of one run, heartbeat,
complete of one success, complete-and-lease-next (``lease`` on ``/complete``), retrieve run,
and an empty dequeue (``wait_ms=0``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_PG, Procs, fresh_database, start_api


def _runtime(pids: list[int]) -> float:
    """Nanoseconds on CPU of these processes, every thread (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for pid in pids:
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def main(argv: list[str] | None = None) -> int:
    import httpx
    import psycopg

    parser = argparse.ArgumentParser(prog="python -m bench.api_cpu", description=__doc__)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    parser.add_argument("--only", default="", help="comma-separated request names")
    parser.add_argument("--profile", default="",
                        help="py-spy the API while measuring: collapsed stacks to this file")
    args = parser.parse_args(argv)
    n = args.n
    log_dir = Path(tempfile.mkdtemp(prefix="bench-api-cpu-"))
    procs = Procs()
    from worker.engine.keys import create_project
    from worker.engine.migrate import migrate

    with fresh_database(args.pg, "bench_api_cpu") as db_url:
        migrate(db_url)
        key = create_project(db_url, "bench")["dev"]
        try:
            api, url = start_api(procs, db_url, log_dir)
            http = httpx.Client(base_url=url, timeout=30,
                                headers={"Authorization": f"Bearer {key}"})
            def ok(reply: httpx.Response, *codes: int) -> httpx.Response:
                if reply.status_code not in (codes or (200,)):
                    raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")
                return reply

            instance = str(uuid.uuid4())
            version = http.post("/engine/v1/worker/register", json={
                "instance_id": instance, "content_hash": uuid.uuid4().hex,
                "tasks": [{"id": "noop", "queue": {"name": "task/noop"}}]}).json()["version_id"]
            # a variable, so dequeue replies carry env vars as in a real project
            ok(http.post("/api/v1/projects/bench/envvars/dev", json={"name": "A", "value": "b"}))
            db = psycopg.connect(db_url, autocommit=True)
            dbname = db.info.dbname

            def pg_pids() -> list[int]:
                rows = db.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                                  "pid <> pg_backend_pid()", (dbname,)).fetchall()
                return [int(r[0]) for r in rows]

            deq = {"instance_id": instance, "versions": [version], "max_runs": 1, "wait_ms": 0}
            stats: dict[str, list[tuple[float, float, float]]] = {}
            wanted = set(args.only.split(",")) if args.only else None

            def timed(name: str, call: Any) -> Any:
                """One request, its API and Postgres CPU (schedstat: ns, every thread)."""
                pg = pg_backends
                a0, p0 = _runtime([api.popen.pid]), _runtime(pg)
                t = time.perf_counter()
                out = call()
                wall = time.perf_counter() - t
                a1, p1 = _runtime([api.popen.pid]), _runtime(pg)
                if wanted is None or name in wanted:
                    stats.setdefault(name, []).append((a1 - a0, p1 - p0, wall))
                return out

            def ok(reply: httpx.Response, *codes: int) -> httpx.Response:
                if reply.status_code not in (codes or (200,)):
                    raise RuntimeError(f"{reply.status_code}: {reply.text[:300]}")
                return reply

            def post(name: str, path: str, body: Any) -> Any:
                return timed(name, lambda: ok(http.post(path, json=body))).json()

            def complete(run: dict[str, Any], lease: bool) -> dict[str, Any]:
                body: dict[str, Any] = {"instance_id": instance, "completions": [{
                    "run_id": run["run_id"], "attempt_number": run["attempt_number"],
                    "ok": True, "output": "1", "output_type": "application/json"}]}
                if lease:
                    body["lease"] = {"versions": [version], "max_runs": 1}
                name = "complete+lease 1" if lease else "complete 1"
                reply = post(name, "/engine/v1/worker/complete", body)
                assert reply["results"][0]["outcome"] == "RUN_FINISHED", reply
                return dict(reply)

            pg_backends: list[int] = []
            spy = None
            for i in range(n + 20):
                if i == 20:  # warmed up: start counting
                    stats.clear()
                    if args.profile:
                        import subprocess

                        spy = subprocess.Popen(["py-spy", "record", "-p", str(api.popen.pid),
                                                "-f", "raw", "-o", args.profile, "-r", "500"],
                                               stdout=subprocess.DEVNULL)
                pg_backends = pg_pids()
                timed("healthz", lambda: ok(http.get("/healthz")))
                timed("404 GET (auth)", lambda: ok(http.get("/api/v3/runs/run_x"), 404))
                run_id = post("trigger", "/api/v1/tasks/noop/trigger", {"payload": {"i": i}})["id"]
                run = post("dequeue 1", "/engine/v1/worker/dequeue", deq)["runs"][0]
                post("heartbeat", "/engine/v1/worker/heartbeat",
                     {"instance_id": instance, "run_ids": [run["run_id"]]})
                # as the SDKs send a trigger: with a request key (x-trigger-request-idempotency-key)
                timed("trigger + request key", lambda i=i: ok(http.post(
                    "/api/v1/tasks/noop/trigger", json={"payload": {"i": i}},
                    headers={"x-trigger-request-idempotency-key": uuid.uuid4().hex})))
                reply = complete(run, lease=True)
                if "runs" in reply:
                    nxt = reply["runs"][0]
                else:  # a server without complete-and-lease-next: a second request
                    nxt = post("dequeue 1", "/engine/v1/worker/dequeue", deq)["runs"][0]
                complete(nxt, lease=False)
                path = f"/api/v3/runs/{run_id}"
                timed("retrieve run", lambda p=path: ok(http.get(p)))
                timed("retrieve waitMs (final)", lambda p=path: ok(http.get(f"{p}?waitMs=1000")))
                post("empty dequeue", "/engine/v1/worker/dequeue", deq)

            if spy is not None:
                import signal

                spy.send_signal(signal.SIGINT)
                spy.wait()
            print(f"n={n}; load {os.getloadavg()[0]:.2f}\n")
            print("| request | API CPU µs | Postgres CPU µs | wall p50 ms |")
            print("|---|---:|---:|---:|")
            for name, values in stats.items():
                api_us = sorted(v[0] / 1000 for v in values)
                pg_us = sorted(v[1] / 1000 for v in values)
                walls = sorted(v[2] * 1000 for v in values)
                mid = len(values) // 2
                print(f"| {name} | {api_us[mid]:6.0f} | {pg_us[mid]:6.0f} | {walls[mid]:6.2f} |")
            db.close()
            http.close()
        finally:
            procs.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
