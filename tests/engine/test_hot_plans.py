"""The hot path's row lookups use the one index they are written for, whatever the statistics
(issue 16; docs/benchmarks.md, "Postgres time per run (session 25)").

A prepared statement keeps the generic plan it was given first. On a database nobody has
analyzed yet (autovacuum off, or not run yet) the planner took indexes on the environment for
a one-run completion and for a retrieve's children: every run of the environment was walked at
every completion and every retrieve, more the more runs there were. Checked here on a freshly
migrated database, the worst case, with the generic plan PostgreSQL would cache.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from worker.engine.keys import create_project
from worker.engine.migrate import migrate
from worker.engine.queries import Q


@pytest.fixture(scope="module")
def fresh_url(database_url: str) -> Iterator[str]:
    """A migrated database with 500 finished runs and no statistics at all (as the benchmarks'
    database is a few seconds in: autovacuum is off there)."""
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    name = f"trigger_plans_{uuid.uuid4().hex[:10]}"
    server = psycopg.conninfo.make_conninfo(**{**info, "dbname": "postgres"})  # type: ignore[arg-type]
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = psycopg.conninfo.make_conninfo(**{**info, "dbname": name})  # type: ignore[arg-type]
    try:
        migrate(url)
        create_project(url, "plans")
        with psycopg.connect(url) as conn:
            conn.execute(
                "INSERT INTO runs (id, environment_id, task_id, status, queue, score)"
                " SELECT 'run_' || g, e.id, 'noop', 'COMPLETED_SUCCESSFULLY', 'task/noop', g"
                " FROM environments e, generate_series(1, 500) g WHERE e.slug = 'dev'")
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _numbered(sql: str) -> tuple[str, int]:
    """The query with $1, $2, ... for its %(name)s placeholders, and how many there are."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), len(names)


def _generic_plan(url: str, query: str) -> str:
    sql, count = _numbered(getattr(Q, query))
    with psycopg.connect(url) as conn:
        conn.execute("SET plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE hot AS {sql}")
        rows = conn.execute(f"EXPLAIN EXECUTE hot({', '.join(['NULL'] * count)})").fetchall()
        conn.rollback()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize(("query", "index"), [
    ("complete_success", "runs_pkey"),
    ("run_children", "runs_parent_idx"),
])
def test_a_hot_lookup_uses_its_index_without_statistics(
    fresh_url: str, query: str, index: str
) -> None:
    plan = _generic_plan(fresh_url, query)
    assert "Seq Scan on runs" not in plan, plan
    assert set(re.findall(r"\bruns_\w+", plan)) == {index}, plan


@pytest.mark.parametrize(("query", "table"), [
    ("run_status_brief", "runs"),  # a waitMs retrieve's first read
    ("retrieve_run", "runs"),
    ("realtime_run", "runs"),  # every realtime change a subscriber is sent
    ("get_run", "runs"),
    ("lock_run_metadata", "runs"),
    ("lock_leased_run", "runs"),
    ("trace_run", "runs"),
    ("lock_run_for_wait", "runs"),
    ("get_waitpoint", "waitpoints"),
    ("get_schedule", "schedules"),
])
def test_a_lookup_by_id_uses_the_primary_key_without_statistics(
    fresh_url: str, query: str, table: str
) -> None:
    """By id within an environment: with ``environment_id = $2`` the planner took an index on
    the environment (the id only filtered it) and walked the environment's every run at each
    retrieve; the environment is compared with IS NOT DISTINCT FROM, which no index serves."""
    plan = _generic_plan(fresh_url, query)
    first = re.search(r"Scan using (\w+) on (\w+)", plan)
    assert first is not None and first.groups()[0] == f"{table}_pkey", plan


def test_a_completion_read_for_a_waiting_poll_finds_its_run_by_primary_key(
    fresh_url: str
) -> None:
    """complete_success_read updates the run found by its primary key, as complete_success."""
    plan = _generic_plan(fresh_url, "complete_success_read")
    update = re.search(r"Update on runs r.*?Scan using (\w+) on runs r\b", plan, re.S)
    assert update is not None and update.group(1) == "runs_pkey", plan
    assert re.search(r"Scan using runs_parent_idx on runs c\b", plan), plan


def test_a_retrieve_asks_for_children_through_the_parent_index(fresh_url: str) -> None:
    """Whether the run triggered any (only then are its children read) is one look into the
    partial index on parent_run_id, not a walk of the table."""
    plan = _generic_plan(fresh_url, "retrieve_run")
    assert re.search(r"Scan using runs_parent_idx on runs c\b", plan), plan
    assert not re.search(r"Seq Scan on runs c\b", plan), plan


def test_the_dequeue_reads_its_picked_runs_by_primary_key(fresh_url: str) -> None:
    """The runs the pick chose are read by id, one lookup each: ``id = ANY(ids) AND status =
    'PENDING'`` was read through a bitmap of the partial index of every pending run, more work
    the deeper the queue, and by id alone it was planned as a sequential scan here."""
    plan = _generic_plan(fresh_url, "dequeue")
    candidates = plan[plan.index("CTE candidates"):plan.index("CTE leased")]
    assert re.findall(r"using (runs_\w+) on runs", candidates) == ["runs_pkey"], plan
    assert "Seq Scan on runs" not in candidates and "Bitmap" not in candidates, plan
    assert "Seq Scan" not in plan, plan
