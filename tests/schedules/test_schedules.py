"""Schedules through the real API: CRUD, declarative sync, firing with a frozen clock
(payload, DST, missed ticks), exactly once across three API processes, the CLI."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg

from tests.conftest import ROOT, ApiServer, start_api, stop_process
from tests.schedules.conftest import register, worker_for
from worker.engine.cron import parse
from worker.engine.db import Pool
from worker.engine.services.cron_trigger import fire_due


def env_id(api: httpx.Client) -> str:
    return str(api.get("/api/v1/auth/jwt/claims").json()["sub"])


def set_next_run(database_url: str, schedule_id: str, when: datetime) -> None:
    """Test setup: move a schedule's next tick to a chosen instant (frozen-clock tests)."""
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE schedules SET next_run_at = %s WHERE id = %s", (when, schedule_id))


def payload_of(api: httpx.Client, run_id: str) -> dict[str, Any]:
    run = api.get(f"/api/v3/runs/{run_id}").json()
    assert run["taskIdentifier"]
    return dict(run["payload"])


def test_imperative_crud_dedup_and_validation(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    worker_for(api_server, project_keys["dev"], "report")
    body = {"task": "report", "cron": "0 9 * * MON", "deduplicationKey": "user-1",
            "externalId": "u1", "timezone": "Europe/Paris"}
    created = api.post("/api/v1/schedules", json=body).json()
    assert created["id"].startswith("sched_") and created["type"] == "IMPERATIVE"
    assert created["active"] and created["generator"]["expression"] == "0 9 * * MON"
    assert len(created["upcoming"]) == 5
    assert datetime.fromisoformat(created["nextRun"]).astimezone(
        __import__("zoneinfo").ZoneInfo("Europe/Paris")).strftime("%a %H:%M") == "Mon 09:00"

    again = api.post("/api/v1/schedules", json={**body, "cron": "0 10 * * MON"}).json()
    assert again["id"] == created["id"] and again["generator"]["expression"] == "0 10 * * MON"
    assert api.get("/api/v1/schedules").json()["pagination"]["count"] == 1

    updated = api.put(f"/api/v1/schedules/{created['id']}",
                      json={"task": "report", "cron": "*/5 * * * *"}).json()
    assert updated["timezone"] == "UTC" and updated["generator"]["expression"] == "*/5 * * * *"
    off = api.post(f"/api/v1/schedules/{created['id']}/deactivate").json()
    assert off["active"] is False and off["nextRun"] is None
    on = api.post(f"/api/v1/schedules/{created['id']}/activate").json()
    assert on["active"] and on["nextRun"]
    assert api.get(f"/api/v1/schedules/{created['id']}").json()["externalId"] is None

    bad = api.post("/api/v1/schedules", json={**body, "cron": "61 * * * *"})
    assert bad.status_code == 400 and "minute: 61" in bad.json()["error"]
    bad_tz = api.post("/api/v1/schedules", json={**body, "timezone": "Nowhere/Else"})
    assert bad_tz.status_code == 400 and "unknown timezone" in bad_tz.json()["error"]
    # the key is optional (as in Trigger.dev): without one, each call adds a schedule
    no_key = [api.post("/api/v1/schedules", json={"task": "report", "cron": "* * * * *"})
              for _ in range(2)]
    assert [r.status_code for r in no_key] == [200, 200]
    assert no_key[0].json()["id"] != no_key[1].json()["id"]
    assert no_key[0].json()["deduplicationKey"] is None
    for r in no_key:
        api.delete(f"/api/v1/schedules/{r.json()['id']}")
    unknown = api.post("/api/v1/schedules", json={**body, "task": "nope"})
    assert unknown.status_code == 404
    assert "Europe/Paris" in api.get("/api/v1/timezones").json()["timezones"]

    assert api.delete(f"/api/v1/schedules/{created['id']}").status_code == 200
    assert api.get(f"/api/v1/schedules/{created['id']}").status_code == 404


def test_a_plain_task_takes_no_schedule(api: httpx.Client) -> None:
    register(api, [{"id": "plain", "trigger_source": "standard"},
                   {"id": "ticking", "trigger_source": "schedule"}], "0000000000c1")
    refused = api.post("/api/v1/schedules", json={"task": "plain", "cron": "0 * * * *"})
    assert refused.status_code == 400, refused.text
    assert "not a scheduled task" in refused.json()["error"]
    accepted = api.post("/api/v1/schedules", json={"task": "ticking", "cron": "0 * * * *"})
    assert accepted.status_code == 200, accepted.text
    moved = api.put(f"/api/v1/schedules/{accepted.json()['id']}",
                    json={"task": "plain", "cron": "0 * * * *"})
    assert moved.status_code == 400 and "not a scheduled task" in moved.json()["error"]


def test_declarative_schedules_follow_the_newest_manifest(api: httpx.Client) -> None:
    v1: list[dict[str, Any]] = [
        {"id": "nightly", "schedule": {"pattern": "0 2 * * *", "timezone": "Europe/Paris"}},
        {"id": "hourly", "schedule": {"pattern": "0 * * * *", "timezone": "UTC"}},
        {"id": "plain"},
    ]
    register(api, v1, "a" * 64)
    listed = {s["task"]: s for s in api.get("/api/v1/schedules").json()["data"]}
    assert set(listed) == {"nightly", "hourly"}
    assert listed["nightly"]["type"] == "DECLARATIVE"
    assert listed["nightly"]["timezone"] == "Europe/Paris"
    refused = api.delete(f"/api/v1/schedules/{listed['nightly']['id']}")
    assert refused.status_code == 400 and "declared in code" in refused.json()["error"]

    time.sleep(0.01)  # a strictly newer version
    v2: list[dict[str, Any]] = [{"id": "nightly", "schedule": "30 3 * * *"}, {"id": "plain"}]
    register(api, v2, "b" * 64)
    listed2 = {s["task"]: s for s in api.get("/api/v1/schedules").json()["data"]}
    assert set(listed2) == {"nightly"}  # "hourly" went away with its task
    assert listed2["nightly"]["id"] == listed["nightly"]["id"]
    assert listed2["nightly"]["generator"]["expression"] == "30 3 * * *"
    assert listed2["nightly"]["timezone"] == "UTC"

    register(api, v1, "a" * 64)  # an old replica restarting does not flip schedules back
    assert {s["task"] for s in api.get("/api/v1/schedules").json()["data"]} == {"nightly"}

    bad = api.post("/engine/v1/worker/register", json={
        "instance_id": str(uuid.uuid4()), "content_hash": "c" * 64,
        "tasks": [{"id": "x", "schedule": "not a cron"}]})
    assert bad.status_code == 400 and "'x'" in bad.json()["error"]


async def test_frozen_clock_firing_payload_and_missed_tick_policy(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str], pool: Pool
) -> None:
    worker_for(api_server, project_keys["dev"], "tick")
    sched = api.post("/api/v1/schedules", json={
        "task": "tick", "cron": "0 * * * *", "deduplicationKey": "k", "externalId": "ext-1",
    }).json()
    env = env_id(api)
    t0 = datetime(2031, 1, 1, tzinfo=UTC)
    set_next_run(api_server.database_url, sched["id"], t0)

    assert await fire_due(pool, t0 - timedelta(seconds=1), environment_id=env) == []
    first = await fire_due(pool, t0 + timedelta(seconds=2), environment_id=env)
    assert len(first) == 1
    assert await fire_due(pool, t0 + timedelta(seconds=3), environment_id=env) == []
    payload = payload_of(api, first[0])
    assert payload["timestamp"] == t0.isoformat() and payload["lastTimestamp"] is None
    assert payload["scheduleId"] == sched["id"] and payload["externalId"] == "ext-1"
    assert payload["timezone"] == "UTC" and payload["type"] == "IMPERATIVE"
    assert payload["upcoming"] == [(t0 + timedelta(hours=h)).isoformat() for h in range(1, 6)]

    # Down from 01:00 to 05:30: one catch-up run for 05:00, the 01:00-04:00 ticks are skipped.
    late = await fire_due(pool, t0 + timedelta(hours=5, minutes=30), environment_id=env)
    assert len(late) == 1
    payload = payload_of(api, late[0])
    assert payload["timestamp"] == (t0 + timedelta(hours=5)).isoformat()
    assert payload["lastTimestamp"] == t0.isoformat()
    assert api.get(f"/api/v1/schedules/{sched['id']}").json()["nextRun"] == (
        t0 + timedelta(hours=6)).isoformat()
    assert len(api.get("/api/v1/runs", params={"filter[taskIdentifier]": "tick"})
               .json()["data"]) == 2


async def test_dst_days_fire_once_each_in_the_schedule_zone(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str], pool: Pool
) -> None:
    worker_for(api_server, project_keys["dev"], "daily")
    sched = api.post("/api/v1/schedules", json={
        "task": "daily", "cron": "30 2 * * *", "deduplicationKey": "d",
        "timezone": "Europe/Paris"}).json()
    env = env_id(api)
    cron = parse("30 2 * * *")

    async def fired_over(start: datetime, hours: int) -> list[str]:
        set_next_run(api_server.database_url, sched["id"],
                     cron.next_after(start, "Europe/Paris"))  # type: ignore[arg-type]
        stamps = []
        for h in range(hours * 2):  # sweep every 30 minutes of the frozen clock
            for run_id in await fire_due(pool, start + timedelta(minutes=30 * h, seconds=1),
                                         environment_id=env):
                stamps.append(payload_of(api, run_id)["timestamp"])
        return stamps

    # 2032-03-28: Paris skips 02:00-03:00; that day's run comes at 03:30 CEST (01:30Z).
    spring = await fired_over(datetime(2032, 3, 27, 12, tzinfo=UTC), 62)
    assert spring == ["2032-03-28T01:30:00+00:00", "2032-03-29T00:30:00+00:00",
                      "2032-03-30T00:30:00+00:00"]
    # 2032-10-31: Paris repeats 02:00-03:00; 02:30 fires once, at its first occurrence.
    autumn = await fired_over(datetime(2032, 10, 30, 12, tzinfo=UTC), 62)
    assert autumn == ["2032-10-31T00:30:00+00:00",
                      "2032-11-01T01:30:00+00:00", "2032-11-02T01:30:00+00:00"]


async def test_exactly_one_run_per_tick_with_three_api_processes(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str], pool: Pool,
    tmp_path: Any,
) -> None:
    worker_for(api_server, project_keys["dev"], "race")
    with ThreadPoolExecutor(2) as starter:  # two more replicas, started side by side
        extra = list(starter.map(
            lambda i: start_api(api_server.database_url, tmp_path / f"api{i}.log",
                                TRIGGER_CRON_MAX_SLEEP="0.02"), range(2)))
    try:
        ids = [api.post("/api/v1/schedules", json={
            "task": "race", "cron": "0 0 1 1 *", "deduplicationKey": f"r{i}"}).json()["id"]
            for i in range(20)]
        # due now, and no other tick can come due while the test runs (yearly pattern)
        past = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)
        with psycopg.connect(api_server.database_url) as conn:
            conn.execute("UPDATE schedules SET next_run_at = %s WHERE id = ANY(%s)", (past, ids))
        # three replicas' loops race for the due ticks; the test process sweeps too
        env = env_id(api)
        await asyncio.gather(*[fire_due(pool, environment_id=env) for _ in range(3)])
        deadline = time.monotonic() + 30  # slow when the machine is loaded
        while True:
            with psycopg.connect(api_server.database_url) as conn:
                ticks = conn.execute(
                    "SELECT schedule_id, count(*) FROM schedule_ticks WHERE schedule_id = ANY(%s)"
                    " GROUP BY schedule_id", (ids,)).fetchall()
                runs = conn.execute(
                    "SELECT count(*) FROM runs WHERE environment_id = %s AND task_id = 'race'",
                    (env,)).fetchone()
            if len(ticks) == 20 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        with psycopg.connect(api_server.database_url) as conn:
            due = conn.execute("SELECT id, next_run_at, active FROM schedules WHERE id = ANY(%s)",
                               (ids,)).fetchall()
            locks = conn.execute("SELECT pid, state, wait_event, left(query, 80) FROM "
                                 "pg_stat_activity WHERE datname = current_database() AND "
                                 "state <> 'idle'").fetchall()
        logs = [(p, p.read_text()[-1500:]) for p in (*(s.log_path for s in extra),
                                                    api_server.log_path) if p is not None]
        why = f"ticks {ticks}; schedules {due}; busy backends {locks}; API logs {logs}"
        assert len(ticks) == 20 and all(count == 1 for _, count in ticks), why
        assert runs is not None and runs[0] == 20
    finally:
        for server in extra:
            stop_process(server.process)


def test_cli_lists_schedules(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    worker_for(api_server, project_keys["dev"], "cli-task")
    api.post("/api/v1/schedules", json={"task": "cli-task", "cron": "15 4 * * *",
                                        "deduplicationKey": "cli", "timezone": "Asia/Tokyo"})
    out = subprocess.run(
        [sys.executable, "-m", "worker", "schedules", "list"],
        env={**os.environ, "TRIGGER_API_URL": api_server.url,
             "TRIGGER_SECRET_KEY": project_keys["dev"]},
        capture_output=True, text=True, cwd=ROOT, timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "cli-task" in out.stdout and "15 4 * * *" in out.stdout and "Asia/Tokyo" in out.stdout


async def test_a_schedule_that_cannot_fire_stops_alone_and_holds_up_no_other(
    api: httpx.Client, api_server: ApiServer, project_keys: dict[str, str], pool: Pool,
    caplog: Any,
) -> None:
    """A stored pattern no longer understood (written around the API) failed every sweep, and
    with it every schedule of the database: none fired again (found by the three-replica test
    when the suite crossed the hour of a corrupted hourly schedule)."""
    worker_for(api_server, project_keys["dev"], "poisoned")
    ids = [api.post("/api/v1/schedules", json={
        "task": "poisoned", "cron": "0 0 1 1 *", "deduplicationKey": f"p{i}"}).json()["id"]
        for i in range(3)]
    broken, zone = ids[0], ids[1]
    past = datetime(datetime.now(UTC).year, 1, 1, tzinfo=UTC)
    with psycopg.connect(api_server.database_url) as conn:
        conn.execute("UPDATE schedules SET next_run_at = %s WHERE id = ANY(%s)", (past, ids))
        # the broken ones are due first: the sweep meets them before the good one
        conn.execute("UPDATE schedules SET cron = 'not a cron', next_run_at = %s WHERE id = %s",
                     (past - timedelta(days=1), broken))
        conn.execute("UPDATE schedules SET timezone = 'Mars/Olympus', next_run_at = %s "
                     "WHERE id = %s", (past - timedelta(days=1), zone))
    env = env_id(api)
    created = await fire_due(pool, environment_id=env)
    assert len(created) == 1 and payload_of(api, created[0])["scheduleId"] == ids[2], created
    with psycopg.connect(api_server.database_url) as conn:
        parked = dict(conn.execute("SELECT id, next_run_at FROM schedules WHERE id = ANY(%s)",
                                   (ids,)).fetchall())
    assert parked[broken] is None and parked[zone] is None, parked  # stopped, not retried
    assert parked[ids[2]] is not None and parked[ids[2]] > datetime.now(UTC)
    said = caplog.text
    assert f"schedule {broken} cannot fire" in said and f"schedule {zone} cannot fire" in said
    assert "until its cron or timezone is updated" in said
    assert await fire_due(pool, environment_id=env) == []  # nothing due any more
    # updating the pattern through the API starts it again
    fixed = api.put(f"/api/v1/schedules/{broken}",
                    json={"task": "poisoned", "cron": "0 0 1 1 *"}).json()
    assert fixed["nextRun"], fixed
