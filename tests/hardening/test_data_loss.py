"""The four defects of issue 10 that lost data or hurt innocent runs (each failed on main):
real API process, real Postgres, real worker protocol calls."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from psycopg.types.json import Jsonb

from tests.conftest import ApiServer
from tests.hardening.conftest import (
    assert_clear_4xx,
    deep_text,
    nested,
    protocol_worker,
    trigger,
)
from tests.protocol_worker import ProtocolWorker

Db = psycopg.Connection[dict[str, Any]]


def test_deep_metadata_is_refused_at_every_entrance(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    worker = protocol_worker(api_server, project_keys["dev"], "deep")
    deep = nested(300)
    assert_clear_4xx(
        client.post("/api/v1/tasks/deep/trigger", json={"options": {"metadata": deep}}), 400, 422
    )
    batch = client.post(
        "/api/v1/tasks/deep/batch",
        json={"items": [{"payload": 1}, {"payload": 2, "options": {"metadata": deep}}]},
    )
    assert_clear_4xx(batch, 400, 422)
    for depth in (200, 1000, 10_000):
        body = '{"payload": ' + deep_text(depth) + "}"
        headers = {"content-type": "application/json"}
        answer = client.post("/api/v1/tasks/deep/trigger", content=body, headers=headers)
        assert_clear_4xx(answer, 400)
    run_id = trigger(client, "deep")
    assert_clear_4xx(client.put(f"/api/v1/runs/{run_id}/metadata", json={"metadata": deep}))
    path = "$." + ".".join(["a"] * 500)  # a flat body that would build 500 levels
    op = {"operations": [{"type": "set", "key": path, "value": 1}]}
    assert_clear_4xx(client.put(f"/api/v1/runs/{run_id}/metadata", json=op))
    stream = client.post(f"/realtime/v1/streams/{run_id}/s", json={"chunks": [1, nested(300)]})
    assert_clear_4xx(stream, 400)
    # the completion flush: the result is kept, the deep metadata dropped
    [run] = worker.dequeue()
    done = worker.complete(run, ok=True, output='"kept"', metadata={"metadata": deep})
    assert done["outcome"] == "RUN_FINISHED"
    shown = client.get(f"/api/v3/runs/{run_id}").json()
    assert shown["output"] == "kept" and shown.get("metadata") in (None, {})


def test_stored_unrenderable_metadata_never_poisons_a_dequeue(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str], db: Db
) -> None:
    """Metadata stored before the limits (planted here): the dequeue that leases it and its
    five neighbours answers 200 with all six, and the run stays readable."""
    worker = protocol_worker(api_server, project_keys["dev"], "legacy")
    ids = [trigger(client, "legacy", i) for i in range(6)]
    db.execute("UPDATE runs SET metadata = %s WHERE id = %s", (Jsonb(nested(300)), ids[0]))
    response = worker.http.post(
        "/engine/v1/worker/dequeue",
        json={"instance_id": worker.instance_id, "versions": [worker.version_id], "max_runs": 6},
    )
    assert response.status_code == 200, response.text[:300]
    runs = response.json()["runs"]
    assert sorted(r["run_id"] for r in runs) == sorted(ids)
    for run in runs:
        assert worker.complete(run, ok=True, output="1")["outcome"] == "RUN_FINISHED"
    assert client.get(f"/api/v3/runs/{ids[0]}").status_code == 200
    listed = client.get("/api/v1/runs", params={"filter[taskIdentifier]": "legacy"})
    assert listed.status_code == 200 and len(listed.json()["data"]) == 6
    assert {r["status"] for r in listed.json()["data"]} == {"COMPLETED"}


def test_trigger_metadata_has_the_size_limit_of_the_metadata_put(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    protocol_worker(api_server, project_keys["dev"], "big")
    big = {"blob": "x" * (300 * 1024)}
    assert_clear_4xx(
        client.post("/api/v1/tasks/big/trigger", json={"options": {"metadata": big}}), 413
    )
    run_id = trigger(client, "big")
    assert_clear_4xx(client.put(f"/api/v1/runs/{run_id}/metadata", json={"metadata": big}), 413)
    fits = {"blob": "x" * (200 * 1024)}
    assert client.post("/api/v1/tasks/big/trigger", json={"options": {"metadata": fits}}).is_success


def test_one_bad_completion_harms_no_other_and_keeps_its_result(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    worker = protocol_worker(api_server, project_keys["dev"], "nine")
    ids = [trigger(client, "nine", i) for i in range(9)]
    runs = worker.dequeue(max_runs=9)
    assert len(runs) == 9
    items: list[dict[str, Any]] = [
        {"run_id": r["run_id"], "attempt_number": r["attempt_number"], "ok": True,
         "output": f'{{"n": {i}}}'}
        for i, r in enumerate(runs)
    ]
    bad = runs[4]["run_id"]
    items[4]["metadata"] = {"metadata": {"note": "nul\u0000here", "k\u0000": 1}}
    items[6]["metadata"] = {"operations": [{"type": "set", "key": "fine", "value": 6}]}
    response = worker.http.post(
        "/engine/v1/worker/complete",
        json={"instance_id": worker.instance_id, "completions": items},
    )
    assert response.status_code == 200, response.text[:300]
    outcomes = {r["run_id"]: r["outcome"] for r in response.json()["results"]}
    assert outcomes == {run_id: "RUN_FINISHED" for run_id in ids}
    for i, run in enumerate(runs):
        shown = client.get(f"/api/v3/runs/{run['run_id']}").json()
        assert shown["status"] == "COMPLETED" and shown["output"] == {"n": i}
    assert client.get(f"/api/v3/runs/{bad}").json().get("metadata") in (None, {})
    assert client.get(f"/api/v3/runs/{runs[6]['run_id']}").json()["metadata"] == {"fine": 6}


def test_one_bad_completion_item_shape_is_refused_alone(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str]
) -> None:
    worker = ProtocolWorker(
        api_server.url, project_keys["dev"], ["shapes"], retry={"max_attempts": 3}
    )
    for i in range(4):
        trigger(client, "shapes", i)
    a, b, c, d = worker.dequeue(max_runs=4)
    items = [
        {"run_id": a["run_id"], "attempt_number": "abc", "ok": True, "output": "1"},
        {"run_id": b["run_id"], "attempt_number": b["attempt_number"], "ok": True,
         "output": {"an": "object"}},
        {"run_id": c["run_id"], "attempt_number": 2**40, "ok": True, "output": "1"},
        {"run_id": d["run_id"], "attempt_number": d["attempt_number"], "ok": False,
         "error": {"type": "STRING_ERROR", "raw": "boom"}, "retry": {"delay_ms": 1e12}},
    ]
    response = worker.http.post(
        "/engine/v1/worker/complete",
        json={"instance_id": worker.instance_id, "completions": items},
    )
    assert response.status_code == 200, response.text[:300]
    results = {r["run_id"]: r for r in response.json()["results"]}
    assert results[a["run_id"]]["outcome"] == "REFUSED"
    assert results[c["run_id"]]["outcome"] == "REFUSED"
    failed = client.get(f"/api/v3/runs/{b['run_id']}").json()
    assert failed["status"] == "FAILED" and "serialised text" in str(failed["error"])
    assert results[d["run_id"]]["outcome"] == "RETRY_QUEUED"
    # the refused ones still hold their lease: a proper completion is recorded
    assert worker.complete(a, ok=True, output="2")["outcome"] == "RUN_FINISHED"


def test_one_bad_log_line_loses_only_itself(
    client: httpx.Client, api_server: ApiServer, project_keys: dict[str, str], db: Db
) -> None:
    worker = protocol_worker(api_server, project_keys["dev"], "logs")
    ids = [trigger(client, "logs", i) for i in range(8)]
    runs = worker.dequeue(max_runs=8)
    lines: list[Any] = [
        {"run_id": r["run_id"], "attempt_number": r["attempt_number"], "level": "info",
         "message": f"line {i}", "attributes": {"i": i}, "time": "2026-01-01T00:00:00+00:00"}
        for i, r in enumerate(runs)
    ]
    lines[2]["message"] = "payload with a NUL \u0000 inside"
    lines[2]["attributes"] = {"nul\u0000key": "v\u0000", "deep": nested(300)}
    response = worker.http.post("/engine/v1/worker/logs", json={"logs": lines})
    assert response.status_code == 200, response.text[:300]
    odd: list[Any] = [
        {**lines[5], "message": "bad time", "time": "not a time"},
        {**lines[6], "message": "huge attempt", "attempt_number": 2**40},
        {"run_id": None, "message": "names no run"},
        "not even an object",
    ]
    response = worker.http.post("/engine/v1/worker/logs", json={"logs": odd})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["stored"] == 2
    rows = db.execute(
        "SELECT run_id, message, attributes FROM run_logs WHERE run_id = ANY(%s)", (ids,)
    ).fetchall()
    assert sorted(r["run_id"] for r in rows) == sorted([*ids, runs[5]["run_id"], runs[6]["run_id"]])
    bad = next(r for r in rows if r["run_id"] == runs[2]["run_id"])
    assert bad["message"] == "payload with a NUL \\u0000 inside"
    assert bad["attributes"]["nul\\u0000key"] == "v\\u0000"
