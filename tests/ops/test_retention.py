"""Retention (worker/engine/services/retention.py) on a real Postgres with runs made through the
real API: old finished runs go with their attempts, logs, stream chunks and spans; recent runs,
live runs, parents with a live child and other environments' runs stay."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from psycopg.rows import dict_row

from tests.conftest import ApiServer
from tests.ops.conftest import Project
from tests.protocol_worker import ProtocolWorker
from worker.engine.db import open_pool
from worker.engine.services.retention import RetentionSettings, sweep


def _trigger(http: httpx.Client, task: str, **options: Any) -> str:
    answer = http.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 1, "options": options})
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _finish(worker: ProtocolWorker, http: httpx.Client, n: int) -> list[str]:
    done: list[str] = []
    while len(done) < n:
        for run in worker.dequeue(max_runs=n, wait_ms=2000):
            worker.post("/engine/v1/worker/logs", {"logs": [
                {"run_id": run["run_id"], "attempt_number": run["attempt_number"],
                 "level": "info", "message": "hello"}]})
            http.post(f"/realtime/v1/streams/{run['run_id']}/s", json={"chunks": [1, 2]})
            worker.complete(run, ok=True, output='"x"')
            done.append(run["run_id"])
    return done


async def test_old_finished_runs_go_with_what_hangs_off_them(
    api_server: ApiServer, project: Project
) -> None:
    http = httpx.Client(base_url=api_server.url, timeout=30,
                        headers={"Authorization": f"Bearer {project.keys['dev']}"})
    worker = ProtocolWorker(api_server.url, project.keys["dev"], ["old", "new", "kid", "live"])
    old = [_trigger(http, "old") for _ in range(5)]
    recent = _trigger(http, "new")
    parent = _trigger(http, "old")
    _finish(worker, http, 7)
    live_child = _trigger(http, "live", parentRunId=parent)  # never finishes
    token = http.post("/api/v1/waitpoints/tokens", json={}).json()["id"]
    http.post(f"/api/v1/waitpoints/tokens/{token}/complete", json={"data": 1}).raise_for_status()

    url = api_server.database_url
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
        env = db.execute("SELECT environment_id FROM runs WHERE id = %s", (recent,)).fetchone()
        assert env is not None
        env_id = env["environment_id"]
        aged = [*old, parent]
        db.execute("UPDATE runs SET completed_at = now() - interval '40 days', "
                   "created_at = now() - interval '41 days' WHERE id = ANY(%s)", (aged,))
        db.execute("UPDATE waitpoints SET completed_at = now() - interval '40 days' "
                   "WHERE id = %s", (token,))
        created_spans = db.execute("SELECT to_regclass('run_spans') IS NULL AS missing"
                                   ).fetchone()["missing"]  # type: ignore[index]
        if created_spans:  # the observability branch's table, stood in for when absent
            db.execute("CREATE TABLE run_spans (run_id text NOT NULL, name text)")
            db.execute("INSERT INTO run_spans SELECT unnest(%s::text[]), 's'", (old,))
        else:  # the real one (migration 0012): spans of the old runs, received just now
            db.execute(
                "INSERT INTO run_spans (trace_id, span_id, run_id, environment_id, name, "
                "start_time, end_time) SELECT md5(r), left(md5(r || 's'), 16), r, %s, 's', "
                "now(), now() FROM unnest(%s::text[]) r", (env_id, old))

        def count(table: str, ids: list[str]) -> int:
            row = db.execute(f"SELECT count(*) AS n FROM {table} WHERE run_id = ANY(%s)", (ids,)
                             ).fetchone()
            return int(row["n"]) if row else -1

        assert count("run_logs", old) == 5 and count("run_stream_chunks", old) == 10
        pool = await open_pool(url, max_size=2)
        try:
            first = await sweep(pool, RetentionSettings(days=30, batch=2, pause=0))
            assert first.runs >= 5
            for table in ("runs", "run_attempts", "run_logs", "run_stream_chunks", "run_packets"):
                column = "id" if table == "runs" else "run_id"
                row = db.execute(f"SELECT count(*) AS n FROM {table} WHERE {column} = ANY(%s)",
                                 (old,)).fetchone()
                assert row is not None and row["n"] == 0, table
            assert count("run_spans", old) == 0
            kept = {r["id"] for r in db.execute(
                "SELECT id FROM runs WHERE id = ANY(%s)", ([recent, parent, live_child],))}
            assert kept == {recent, parent, live_child}  # the parent waits for its live child
            assert db.execute("SELECT 1 FROM waitpoints WHERE id = %s", (token,)).fetchone() is None

            # the child finishes (long ago too): then the parent goes as well
            db.execute("UPDATE runs SET status = 'CANCELED', completed_at = now() - "
                       "interval '40 days' WHERE id = %s", (live_child,))
            await sweep(pool, RetentionSettings(days=30, batch=2, pause=0))
            left = {r["id"] for r in db.execute("SELECT id FROM runs WHERE id = ANY(%s)",
                                                ([recent, parent, live_child],))}
            assert left == {recent}

            # a per-environment override: 1 day here deletes a 2-day-old run, 30 elsewhere not
            db.execute("UPDATE runs SET completed_at = now() - interval '2 days' WHERE id = %s",
                       (recent,))
            await sweep(pool, RetentionSettings(days=30, batch=2, pause=0))
            assert db.execute("SELECT 1 FROM runs WHERE id = %s", (recent,)).fetchone()
            db.execute("UPDATE environments SET retention_days = 1 WHERE id = %s", (env_id,))
            await sweep(pool, RetentionSettings(days=30, batch=2, pause=0))
            assert db.execute("SELECT 1 FROM runs WHERE id = %s", (recent,)).fetchone() is None
            # off
            assert (await sweep(pool, RetentionSettings(days=0))).runs == 0
        finally:
            await pool.close()
            if created_spans:
                db.execute("DROP TABLE run_spans")


def test_cli_sets_an_environment_retention(api_server: ApiServer, project: Project) -> None:
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    env = {**os.environ, "DATABASE_URL": api_server.database_url, "PYTHONPATH": str(ROOT)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "worker.cli", "retention", "set", *args],
                              env=env, capture_output=True, text=True, timeout=60)

    def days() -> int | None:
        with psycopg.connect(api_server.database_url) as db:
            row = db.execute("SELECT e.retention_days FROM environments e JOIN projects p ON "
                             "p.id = e.project_id WHERE p.ref = %s AND e.slug = 'prod'",
                             (project.ref,)).fetchone()
        assert row is not None
        return row[0]

    done = cli("--project", project.ref, "--env", "prod", "--days", "7")
    assert done.returncode == 0, done.stderr
    assert days() == 7
    assert cli("--project", project.ref, "--env", "prod", "--days", "0").returncode == 0
    assert days() is None
    missing = cli("--project", "nope", "--env", "prod", "--days", "3")
    assert missing.returncode != 0 and "no environment" in missing.stderr
