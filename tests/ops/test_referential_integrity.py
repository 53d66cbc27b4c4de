"""What the hot tables' foreign keys did when a parent goes, done from the parent's side now
that their inserts check none (migration 0023, docs/architecture.md "Referential integrity"):
an operator deleting an environment by SQL takes its runs, attempts and request keys with it;
a version that runs still name cannot be deleted. (Retention's runs taking their attempts:
tests/ops/test_retention.py.) Runs made through the real API and a real worker protocol."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import ApiServer
from tests.ops.conftest import Project
from tests.protocol_worker import ProtocolWorker
from worker.engine.keys import create_project
from worker.engine.request_keys import HEADER


def _client(api_server: ApiServer, key: str) -> httpx.Client:
    return httpx.Client(base_url=api_server.url, timeout=30,
                        headers={"Authorization": f"Bearer {key}"})


def _trigger(http: httpx.Client, task: str) -> str:
    answer = http.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 1},
                       headers={HEADER: uuid.uuid4().hex})  # a request key row per trigger
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])


def _counts(db: psycopg.Connection[Any], env_id: object, run_ids: list[str]) -> dict[str, int]:
    """Rows of the environment (attempts: of its runs, or of ``run_ids`` once those are gone)."""
    counts = {}
    for table, where, params in (
        ("runs", "environment_id = %s", (env_id,)),
        ("run_attempts", "run_id = ANY(%s)", (run_ids,)),
        ("request_keys", "environment_id = %s", (env_id,)),
        ("batches", "environment_id = %s", (env_id,)),
        ("worker_versions", "environment_id = %s", (env_id,)),
    ):
        row = db.execute(f"SELECT count(*) AS n FROM {table} WHERE {where}", params).fetchone()
        counts[table] = int(row["n"]) if row else -1
    return counts


def test_an_environment_deleted_takes_its_runs_attempts_and_request_keys(
    api_server: ApiServer, project: Project
) -> None:
    http = _client(api_server, project.keys["dev"])
    worker = ProtocolWorker(api_server.url, project.keys["dev"], ["gone"])
    finished = _trigger(http, "gone")
    [run] = worker.dequeue(max_runs=1, wait_ms=2000)
    assert run["run_id"] == finished
    worker.complete(run, ok=True, output='"x"')
    running = _trigger(http, "gone")
    [held] = worker.dequeue(max_runs=1, wait_ms=2000)  # an attempt still executing
    assert held["run_id"] == running
    queued = _trigger(http, "gone")
    batch = http.post("/api/v1/tasks/gone/batch", json={"items": [{"payload": 1}] * 2})
    assert batch.status_code == 200, batch.text

    other = create_project(api_server.database_url, f"keep-{uuid.uuid4().hex[:8]}")
    other_http = _client(api_server, other["dev"])
    ProtocolWorker(api_server.url, other["dev"], ["kept"])
    kept = _trigger(other_http, "kept")

    with psycopg.connect(api_server.database_url, autocommit=True, row_factory=dict_row) as db:
        env_id = db.execute("SELECT environment_id FROM runs WHERE id = %s",
                            (finished,)).fetchone()["environment_id"]  # type: ignore[index]
        other_env = db.execute("SELECT environment_id FROM runs WHERE id = %s",
                               (kept,)).fetchone()["environment_id"]  # type: ignore[index]
        ours = [finished, running, queued]
        before = _counts(db, env_id, ours)
        assert before["runs"] == 5 and before["run_attempts"] == 2
        assert before["request_keys"] == 3 and before["batches"] == 1
        other_before = _counts(db, other_env, [kept])

        db.execute("DELETE FROM environments WHERE id = %s", (env_id,))

        assert _counts(db, env_id, ours) == {"runs": 0, "run_attempts": 0, "request_keys": 0,
                                       "batches": 0, "worker_versions": 0}
        assert _counts(db, other_env, [kept]) == other_before  # another environment keeps its own
    assert other_http.get(f"/api/v3/runs/{kept}").json()["status"] == "QUEUED"


def test_a_version_runs_still_name_cannot_be_deleted(
    api_server: ApiServer, project: Project
) -> None:
    http = _client(api_server, project.keys["dev"])
    worker = ProtocolWorker(api_server.url, project.keys["dev"], ["pinned"])
    run_id = _trigger(http, "pinned")
    [run] = worker.dequeue(max_runs=1, wait_ms=2000)
    worker.complete(run, ok=True, output='"x"')

    with psycopg.connect(api_server.database_url, autocommit=True) as db:
        named = db.execute("SELECT version_id FROM runs WHERE id = %s", (run_id,)).fetchone()
        assert named is not None and str(named[0]) == worker.version_id
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="still named by runs"):
            db.execute("DELETE FROM worker_versions WHERE id = %s", (worker.version_id,))
        assert db.execute("SELECT count(*) FROM worker_versions WHERE id = %s",
                          (worker.version_id,)).fetchone() == (1,)

        db.execute("DELETE FROM runs WHERE id = %s", (run_id,))  # its attempt goes with it
        assert db.execute("SELECT count(*) FROM run_attempts WHERE run_id = %s",
                          (run_id,)).fetchone() == (0,)
        db.execute("DELETE FROM worker_versions WHERE id = %s", (worker.version_id,))
        assert db.execute("SELECT count(*) FROM worker_versions WHERE id = %s",
                          (worker.version_id,)).fetchone() == (0,)
