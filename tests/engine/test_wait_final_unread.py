"""A ``waitMs`` retrieve of a run its own API process created, and has not heard end, waits
without reading the run first (RealtimeHub.running, runs.wait_final). What makes that safe is
tested here: the run ending at another API process, before the retrieve or during it; a final
status heard; the LISTEN session lost. Real API processes, real Postgres NOTIFY."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

from tests.conftest import ApiServer, start_api, stop_process
from tests.protocol_worker import ProtocolWorker
from worker.engine.notifier import Notifier
from worker.engine.realtime import RUN_CHANNEL, RealtimeHub


def _trigger(client: httpx.Client, task: str) -> str:
    reply = client.post(f"/api/v1/tasks/{task}/trigger", json={"payload": 1})
    reply.raise_for_status()
    return str(reply.json()["id"])


def test_a_run_created_here_and_ended_at_another_api_process_answers_at_once(
    env: tuple[httpx.Client, str], api_server: ApiServer, tmp_path: Path
) -> None:
    client, key = env
    other = start_api(api_server.database_url, tmp_path / "other-api.log")
    try:
        worker = ProtocolWorker(other.url, key, ["ended-elsewhere"])  # completes at the other
        # this API listens from its first waiting retrieve on
        primer = _trigger(client, "ended-elsewhere")
        assert client.get(f"/api/v3/runs/{primer}", params={"waitMs": "50"}).status_code == 200

        # ended before the retrieve comes: answered at once, final
        run_id = _trigger(client, "ended-elsewhere")
        leased = {r["run_id"]: r for r in worker.dequeue(max_runs=2, wait_ms=5000)}
        assert run_id in leased
        worker.complete(leased[run_id], ok=True, output='"early"', output_type="application/json")
        started = time.monotonic()
        body = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "20000"}).json()
        assert body["status"] == "COMPLETED" and body["output"] == "early", body
        assert time.monotonic() - started < 5, "waited for the timeout: the end was missed"

        # ended while the retrieve waits
        run_id = _trigger(client, "ended-elsewhere")
        leased = {r["run_id"]: r for r in worker.dequeue(max_runs=2, wait_ms=5000)}

        def finish_soon() -> None:
            time.sleep(0.5)
            worker.complete(leased[run_id], ok=True, output='"late"',
                            output_type="application/json")

        finisher = threading.Thread(target=finish_soon)
        started = time.monotonic()
        finisher.start()
        body = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "20000"}).json()
        finisher.join()
        assert body["status"] == "COMPLETED" and body["output"] == "late", body
        assert time.monotonic() - started < 10, "waited for the timeout: the end was missed"

        # canceled at the other process while waited for here
        run_id = _trigger(client, "ended-elsewhere")
        canceler = threading.Timer(0.3, lambda: httpx.post(
            f"{other.url}/api/v2/runs/{run_id}/cancel",
            headers={"Authorization": f"Bearer {key}"}).raise_for_status())
        canceler.start()
        body = client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "20000"}).json()
        canceler.join()
        assert body["status"] == "CANCELED", body
    finally:
        stop_process(other.process)


def test_a_run_of_another_environment_is_not_found_however_it_was_created(
    env: tuple[httpx.Client, str], api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    client, key = env
    ProtocolWorker(api_server.url, key, ["env-bound"])
    run_id = _trigger(client, "env-bound")
    assert client.get(f"/api/v3/runs/{run_id}", params={"waitMs": "50"}).status_code == 200
    other_env = httpx.get(f"{api_server.url}/api/v3/runs/{run_id}", params={"waitMs": "2000"},
                          headers={"Authorization": f"Bearer {project_keys['prod']}"})
    assert other_env.status_code == 404, other_env.text


async def _until(predicate: Any, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


async def test_the_hub_knows_a_run_running_only_within_one_listen_session(
    api_server: ApiServer
) -> None:
    name = f"hub-{uuid.uuid4().hex[:12]}"
    url = api_server.database_url
    notifier = Notifier(make_conninfo(url, application_name=name))
    await notifier.start()
    hub = RealtimeHub(notifier)
    env_id, other_env = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        hub.expect("run_before", env_id)  # not listening yet: not known
        watch = await hub.watch_final("someone", env_id)  # starts listening
        hub.unwatch_final("someone", watch)
        assert not hub.running("run_before", env_id)

        hub.expect("run_a", env_id)
        hub.expect("run_b", env_id)
        hub.expect("run_gone", env_id)
        hub.forget("run_gone")
        assert hub.running("run_a", env_id) and hub.running("run_b", env_id)
        assert not hub.running("run_a", other_env) and not hub.running("run_gone", env_id)

        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            async def notify(run_id: str, status: str) -> None:
                line = f"{env_id} {run_id} - {status} {time.time_ns() // 1000}"
                await conn.execute("SELECT pg_notify(%s, %s)", (RUN_CHANNEL, line))

            await notify("run_a", "EXECUTING")  # not final: still running
            await notify("run_a", "COMPLETED_SUCCESSFULLY")
            await _until(lambda: not hub.running("run_a", env_id), "run_a heard final")
            assert hub.running("run_b", env_id)

            # the LISTEN connection lost: nothing heard before it is trusted again
            await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                               "WHERE application_name = %s", (name,))
            await _until(lambda: not hub.running("run_b", env_id), "the session's end seen")
            watch = await hub.watch_final("someone", env_id)  # listening again
            hub.unwatch_final("someone", watch)
            assert not hub.running("run_b", env_id)
            hub.expect("run_c", env_id)
            assert hub.running("run_c", env_id)
            # the one connection still serves the notifier's own channels, and the hub's
            woken = notifier.event(env_id)
            await conn.execute("SELECT pg_notify('trigger_runs', %s)", (env_id,))
            await asyncio.wait_for(woken.wait(), 10)
            await notify("run_c", "CANCELED")
            await _until(lambda: not hub.running("run_c", env_id), "run_c heard final")
    finally:
        await notifier.stop()
