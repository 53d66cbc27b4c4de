"""``python -m bench.hops``: where the trigger → start latency goes, hop by hop.

Sequential triggers on an idle warm worker (as the latency scenario), each run timed with the
clocks of the one machine: the client's, the task body's stamp, and the transaction timestamps
Postgres records (``now()`` is the start of the writing transaction):

    t0  client sends the trigger                   (client)
    t1  trigger transaction starts                 runs.created_at
    t2  client has the 2xx                         (client)
    t3  lease transaction starts                   run_attempts.started_at
    t4  task body starts                           stamp in the output
    t5  completion transaction starts              run_attempts.completed_at
    t6  client sees the result                     (client, polling or ``waitMs``)

Then the parts in isolation, for the same machine and load: a commit with and without a WAL
flush, a NOTIFY reaching a LISTEN connection, the dequeue statement alone, an HTTP round trip
to the API (``/healthz``) and an empty ``/dequeue``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_PG, machine_info, percentile
from bench.systems import Options
from bench.systems.ours import Ours


def _ms(a: float, b: float) -> float:
    return (b - a) * 1000


def end_to_end(ours: Ours, count: int, wait: str) -> dict[str, list[float]]:
    import psycopg

    assert ours.http
    worker = ours.start_worker()
    parts: dict[str, list[float]] = {k: [] for k in (
        "trigger request → insert txn", "insert txn → 2xx at client",
        "insert txn → lease txn (commit, NOTIFY, wake-up, long-poll)",
        "lease txn → body starts (lease SQL, HTTP reply, supervisor, frame)",
        "body starts → completion txn (frame back, flush, HTTP)",
        "completion txn → result at client",
        "trigger → body starts", "trigger → result visible")}
    try:
        with psycopg.connect(ours.db_url, autocommit=True) as conn:
            for i in range(count + 10):
                t0 = time.time()
                reply = ours.http.post("/api/v1/tasks/stamp/trigger", json={"payload": i})
                t2 = time.time()
                reply.raise_for_status()
                run_id = reply.json()["id"]
                run = _wait_result(ours, run_id, wait)
                t6 = time.time()
                row = conn.execute(
                    "SELECT extract(epoch FROM r.created_at), extract(epoch FROM a.started_at),"
                    " extract(epoch FROM a.completed_at) FROM runs r JOIN run_attempts a"
                    " ON a.run_id = r.id WHERE r.id = %s", (run_id,)).fetchone()
                if i < 10:
                    continue  # warm-up
                t1, t3, t5 = (float(x) for x in row)
                t4 = float(run["output"]["t"])
                for key, value in zip(parts, (
                        _ms(t0, t1), _ms(t1, t2), _ms(t1, t3), _ms(t3, t4), _ms(t4, t5),
                        _ms(t5, t6), _ms(t0, t4), _ms(t0, t6)), strict=True):
                    parts[key].append(value)
    finally:
        ours._stop(worker)
    return parts


def _wait_result(ours: Ours, run_id: str, wait: str) -> dict[str, Any]:
    assert ours.http
    deadline = time.monotonic() + 10
    while True:
        params = {"waitMs": "10000"} if wait == "long-poll" else None
        run: dict[str, Any] = ours.http.get(f"/api/v3/runs/{run_id}", params=params).json()
        if run["status"] == "COMPLETED":
            return run
        if run.get("isCompleted") or time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} ended {run['status']}")
        if wait == "poll":
            time.sleep(0.0005)


async def isolated(ours: Ours, count: int) -> dict[str, list[float]]:
    """Each part of the path alone, against the same database and API."""
    import httpx
    import psycopg

    out: dict[str, list[float]] = {}
    async with await psycopg.AsyncConnection.connect(ours.db_url, autocommit=True) as conn:
        await conn.execute("CREATE TEMP TABLE t (id int)")  # temp: no WAL at all; use a real one
        await conn.execute("CREATE TABLE IF NOT EXISTS bench_hops (id int)")
        for sync in ("on", "off"):
            times = []
            for i in range(count):
                t0 = time.perf_counter()
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL synchronous_commit = {sync}")
                    await conn.execute("INSERT INTO bench_hops VALUES (%s)", (i,))
                times.append(_ms(t0, time.perf_counter()))
            out[f"one-row insert + commit, synchronous_commit={sync}"] = times
        listen = await psycopg.AsyncConnection.connect(ours.db_url, autocommit=True)
        try:
            await listen.execute("LISTEN bench_hops")
            gen = listen.notifies()
            times = []
            for _ in range(count):
                t0 = time.perf_counter()
                await conn.execute("NOTIFY bench_hops, 'x'")
                await gen.__anext__()
                times.append(_ms(t0, time.perf_counter()))
            out["NOTIFY (autocommit) → LISTEN connection has it"] = times
        finally:
            await listen.close()
        await conn.execute("DROP TABLE bench_hops")
    async with httpx.AsyncClient(base_url=ours.api_url, headers={
            "Authorization": f"Bearer {ours.key}"}) as http:
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            (await http.get("/healthz")).raise_for_status()
            times.append(_ms(t0, time.perf_counter()))
        out["HTTP round trip to the API (/healthz)"] = times
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            (await http.get("/api/v3/runs/run_doesnotexist")).status_code  # noqa: B018
            times.append(_ms(t0, time.perf_counter()))
        out["authenticated GET /api/v3/runs/{id} (404)"] = times
    return out


def dequeue_sql(ours: Ours, count: int) -> dict[str, list[float]]:
    """The lease statement alone (psycopg, no HTTP): one queued run leased per call, committed,
    with the WAL flush and without it; the insert of the run is not timed."""
    import psycopg
    from psycopg.rows import dict_row

    from worker.engine.queries import Q

    out: dict[str, list[float]] = {}
    with psycopg.connect(ours.db_url, row_factory=dict_row) as conn:
        env_id, version_id = _env_and_version(conn)
        instance = str(uuid.uuid4())
        conn.execute("INSERT INTO workers (instance_id, environment_id, version_id, metadata) "
                     "VALUES (%s, %s, %s, '{}') ON CONFLICT DO NOTHING",
                     (instance, env_id, version_id))
        conn.commit()
        params = {"environment_id": env_id, "newest": version_id, "versions": [version_id],
                  "newest_tasks": ["noop", "stamp"], "limit": 1, "instance_id": instance,
                  "lease_seconds": 30.0, "live_seconds": 30.0}
        for batch, sync in ((1, "on"), (1, "off"), (10, "on"), (10, "off")):
            times = []
            for _ in range(max(count // batch, 20)):
                for _ in range(batch):
                    _queue_one(conn, env_id)
                t0 = time.perf_counter()
                conn.execute(f"SET LOCAL synchronous_commit = {sync}")
                rows = conn.execute(Q.dequeue, {**params, "limit": batch}).fetchall()
                conn.commit()
                times.append(_ms(t0, time.perf_counter()))
                assert len(rows) == batch, "not everything leased"
                conn.execute("UPDATE runs SET status = 'COMPLETED_SUCCESSFULLY', "
                             "lease_owner = NULL WHERE id = ANY(%s)", ([r["id"] for r in rows],))
                conn.commit()
            out[f"dequeue statement + commit ({batch} run{'s' if batch > 1 else ''}), "
                f"synchronous_commit={sync} (the environment lock is held throughout)"] = times
    return out


def _env_and_version(conn: Any) -> tuple[str, str]:
    row = conn.execute("SELECT environment_id, id FROM worker_versions ORDER BY created_at DESC "
                       "LIMIT 1").fetchone()
    return str(row["environment_id"]), str(row["id"])


def _queue_one(conn: Any, env_id: str) -> None:
    """A PENDING noop run, copied from a finished one (the columns stay the engine's)."""
    conn.execute(
        "INSERT INTO runs SELECT (jsonb_populate_record(r, jsonb_build_object("
        "'id', 'run_' || md5(random()::text), 'status', 'PENDING', 'version_id', NULL,"
        "'lease_owner', NULL, 'lease_expires_at', NULL, 'attempt_number', 0,"
        "'idempotency_key', NULL, 'output', NULL, 'completed_at', NULL,"
        "'score', floor(extract(epoch FROM now()) * 1000)::bigint))).* FROM runs r "
        "WHERE r.environment_id = %s AND r.task_id = 'stamp' LIMIT 1", (env_id,))
    conn.commit()


def table(title: str, parts: dict[str, list[float]]) -> str:
    lines = [f"### {title}", "", "| hop | p50 (ms) | p90 (ms) | p99 (ms) |", "|---|---:|---:|---:|"]
    for key, values in parts.items():
        lines.append(f"| {key} | {percentile(values, 50):.2f} | {percentile(values, 90):.2f} | "
                     f"{percentile(values, 99):.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.hops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--wait", choices=("poll", "long-poll"), default="long-poll",
                        help="how the client waits for the result")
    parser.add_argument("--e2e-only", action="store_true", help="skip the parts alone")
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    opts = Options(n=0, latency_n=args.count, pg_url=args.pg, redis_url="",
                   log_dir=Path(tempfile.mkdtemp(prefix="trigger-hops-")),
                   ours_concurrency=args.concurrency)
    before = machine_info()
    ours = Ours(opts)
    ours.setup()
    try:
        e2e = end_to_end(ours, args.count, args.wait)
        parts = {} if args.e2e_only else asyncio.run(isolated(ours, args.count))
        if not args.e2e_only:
            parts.update(dequeue_sql(ours, args.count))
    finally:
        ours.teardown()
    after = machine_info()
    print(f"nproc {before['nproc']}, load before {' '.join(f'{x:.2f}' for x in before['load'])}"
          f", after {' '.join(f'{x:.2f}' for x in after['load'])}; {args.count} runs, "
          f"client waits by {args.wait}\n")
    print(table("End to end, split by the transaction timestamps", e2e))
    if parts:
        print()
        print(table("Parts alone", parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
