"""Fuzzing through the real API and Postgres (bounded: fixed example counts and seeds).

- schemathesis: every public operation of the served OpenAPI document (``/api/…`` and the
  stream writer; the SSE readers are left out, they stream until the run ends), with the dev
  key: no response >= 500, status codes, content types and bodies as the document says;
- hypothesis: the values users send (payloads, metadata, tags, keys, durations, priorities,
  crons, completions) with NUL, lone surrogates, 10,000-deep nesting and huge numbers, through
  trigger, batch, metadata, schedules and the worker's completion path: each answers 2xx or a
  clear 4xx; then ordinary runs of the same project still complete with their logs.

The counts of inputs and of 5xx answers are printed at the end of the module (``-s``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import checks as sc
from schemathesis.config import SchemathesisConfig

from tests.conftest import ApiServer
from tests.hardening.conftest import deep_text
from tests.protocol_worker import ProtocolWorker
from worker.engine.keys import create_project

STATS: Counter[str] = Counter()
FUZZ_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_keys(api_server: ApiServer) -> Iterator[dict[str, str]]:
    """One project for the module, with a registered task the fuzzers can trigger."""
    keys = create_project(api_server.database_url, f"fuzz-{uuid.uuid4().hex[:8]}")
    worker = ProtocolWorker(api_server.url, keys["dev"], ["fuzz"])
    worker.close()
    yield keys
    print(f"\nfuzz inputs tried: {dict(STATS)}")


def _count(response: Any, kind: str) -> None:
    STATS[f"{kind} inputs"] += 1
    if response.status_code >= 500:
        STATS[f"{kind} 5xx"] += 1


# --- schemathesis ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(api_server: ApiServer, fuzz_keys: dict[str, str]) -> Any:
    # the coverage phase alone sends ~2,000 boundary cases: too slow for the suite, on demand
    # with TRIGGER_FUZZ_COVERAGE=1
    coverage = os.environ.get("TRIGGER_FUZZ_COVERAGE") == "1"
    config = SchemathesisConfig.from_dict({"phases": {"coverage": {"enabled": coverage}}})
    schema = schemathesis.openapi.from_url(
        f"{api_server.url}/openapi.json",
        headers={"Authorization": f"Bearer {fuzz_keys['dev']}"},
        config=config,
    )
    public = schema.include(path_regex=r"^/(api/|realtime/v1/streams/)")
    # the SSE readers hold the connection open until the run ends
    return public.exclude(method="GET", path_regex=r"^/realtime/")


schema = schemathesis.pytest.from_fixture("api_schema")
CHECKS = [
    sc.not_a_server_error,
    sc.status_code_conformance,
    sc.content_type_conformance,
    sc.response_schema_conformance,
]


@schema.parametrize()
@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_public_operation_answers_by_its_schema(
    case: schemathesis.Case, fuzz_keys: dict[str, str]
) -> None:
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {fuzz_keys['dev']}"}, checks=CHECKS, timeout=30
    )
    _count(response, "schemathesis")


# --- hypothesis strategies of what users send --------------------------------------------------

NASTY_TEXT = st.sampled_from(
    ["", "\u0000", "a\u0000b", "\ud800", "x" * 5000, "💥", "' OR 1=1 --", "%00", "\\u0000"]
)
TEXT = st.one_of(st.text(max_size=40), NASTY_TEXT)
HUGE_NUMBERS = st.sampled_from([2**63, -(2**63) - 1, 2**200, 1e20, 1e308, -1e308, 5e-324])
NUMBERS = st.one_of(st.integers(-(2**40), 2**40), st.floats(allow_nan=False), HUGE_NUMBERS)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
DURATIONS = st.one_of(
    st.from_regex(r"\A[0-9]{1,14}(\.[0-9]{1,3})?(ms|s|m|h|d|w)\Z"),
    NUMBERS,
    TEXT,
    st.just("2026-01-01T00:00:00Z"),
)
CRONS = st.one_of(
    st.builds(
        " ".join,
        st.lists(
            st.sampled_from(["*", "0", "*/5", "1-5", "31", "2", "MON", "99", "L", "a\u0000"]),
            min_size=4,
            max_size=6,
        ),
    ),
    TEXT,
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "tags": st.one_of(st.lists(TEXT, max_size=12), TEXT),
        "idempotencyKey": TEXT,
        "idempotencyKeyTTL": DURATIONS,
        "delay": DURATIONS,
        "ttl": DURATIONS,
        "priority": NUMBERS,
        "metadata": st.one_of(st.dictionaries(TEXT, JSON, max_size=4), JSON),
        "concurrencyKey": st.one_of(TEXT, NUMBERS),
        "queue": st.one_of(TEXT, st.fixed_dictionaries({"name": JSON})),
        "machine": st.one_of(st.sampled_from(["micro", "large-2x", "galaxy-brain-99x"]), TEXT),
        "maxAttempts": NUMBERS,
        "maxDuration": NUMBERS,
    },
)
#: bodies no encoder writes: 10,000 levels deep, lone surrogates, numbers beyond doubles
RAW_BODIES = st.sampled_from(
    [
        '{"payload": ' + deep_text(10_000) + "}",
        '{"payload": ' + deep_text(300) + "}",
        '{"payload": 1, "options": {"metadata": ' + deep_text(300) + "}}",
        '{"payload": "\\ud800"}',
        '{"payload": 1e400}',
        '{"payload": 1, "options": {"priority": 1e400}}',
        '{"payload": 123456789012345678901234567890}',
        '{"payload": "\\u0000", "options": {"tags": ["\\u0000"]}}',
    ]
)


def _post(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    """``body`` sent as JSON text (ASCII: lone surrogates travel as \\u escapes)."""
    content = body if isinstance(body, str) else json.dumps(body, allow_nan=False)
    return http.post(path, content=content, headers={"content-type": "application/json"})


def _clear(response: httpx.Response, kind: str) -> None:
    _count(response, kind)
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        assert isinstance(response.json().get("error"), str), (response.url, response.text[:300])


@pytest.fixture(scope="module")
def http(api_server: ApiServer, fuzz_keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api_server.url,
        headers={"Authorization": f"Bearer {fuzz_keys['dev']}"},
        timeout=60,
    ) as client:
        yield client


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (ValueError, RecursionError):
        return False
    return True


@FUZZ_SETTINGS
@seed(10)
@given(payload=JSON, options=OPTIONS, raw=st.one_of(st.none(), RAW_BODIES))
def test_triggers_answer_2xx_or_a_clear_4xx(
    http: httpx.Client, payload: Any, options: dict[str, Any], raw: str | None
) -> None:
    body: Any = raw or {"payload": payload, "options": options}
    if raw is None and not _encodable(body):
        return
    _clear(_post(http, "/api/v1/tasks/fuzz/trigger", body), "trigger")


@FUZZ_SETTINGS
@seed(11)
@given(items=st.lists(st.fixed_dictionaries({"payload": JSON, "options": OPTIONS}), max_size=3))
def test_batches_answer_2xx_or_a_clear_4xx(http: httpx.Client, items: list[Any]) -> None:
    if _encodable(items):
        _clear(_post(http, "/api/v1/tasks/fuzz/batch", {"items": items}), "batch")


OPERATION = st.fixed_dictionaries(
    {"type": st.sampled_from(["set", "delete", "append", "remove", "increment", "update", "x"])},
    optional={
        "key": st.one_of(TEXT, st.just("$." + ".".join(["a"] * 500)), st.just("$.a.b")),
        "value": JSON,
    },
)


@FUZZ_SETTINGS
@seed(12)
@given(
    metadata=st.one_of(st.none(), JSON),
    operations=st.lists(OPERATION, max_size=4),
    target=st.sampled_from(["operations", "parentOperations", "rootOperations"]),
)
def test_metadata_updates_answer_2xx_or_a_clear_4xx(
    http: httpx.Client, metadata: Any, operations: list[Any], target: str
) -> None:
    run = http.post("/api/v1/tasks/fuzz/trigger", json={"payload": 1}).json()["id"]
    body = {"metadata": metadata, target: operations}
    if _encodable(body):
        _clear(_post(http, f"/api/v1/runs/{run}/metadata", body), "metadata")
        _clear(http.get(f"/api/v3/runs/{run}"), "metadata")


@FUZZ_SETTINGS
@seed(13)
@given(cron=CRONS, timezone=st.one_of(st.just("UTC"), TEXT), key=TEXT)
def test_schedules_answer_2xx_or_a_clear_4xx(
    http: httpx.Client, cron: str, timezone: str, key: str
) -> None:
    body = {"task": "fuzz", "cron": cron, "timezone": timezone, "deduplicationKey": key}
    _clear(_post(http, "/api/v1/schedules", body), "schedule")


COMPLETION = st.fixed_dictionaries(
    {"ok": st.booleans()},
    optional={
        "output": st.one_of(TEXT, JSON, st.just("not json"), st.just(deep_text(300))),
        "output_type": st.one_of(st.just("application/json"), TEXT),
        "error": JSON,
        "retry": st.one_of(JSON, st.fixed_dictionaries({"delay_ms": NUMBERS})),
        "metadata": JSON,
        "attempt_number": NUMBERS,
        "skipped_retrying": JSON,
    },
)


@settings(FUZZ_SETTINGS, max_examples=25)
@seed(14)
@given(completions=st.lists(COMPLETION, min_size=1, max_size=3))
def test_completions_answer_2xx_and_the_worker_can_go_on(
    http: httpx.Client, api_server: ApiServer, fuzz_keys: dict[str, str], completions: list[Any]
) -> None:
    worker = ProtocolWorker(api_server.url, fuzz_keys["dev"], ["fuzz"])
    try:
        for _ in completions:
            http.post("/api/v1/tasks/fuzz/trigger", json={"payload": 1})
        runs = worker.dequeue(max_runs=len(completions))
        items = [
            {"run_id": run["run_id"], "attempt_number": run["attempt_number"], **sent}
            for run, sent in zip(runs, completions, strict=False)
        ]
        if not _encodable(items):
            return
        body = {"instance_id": worker.instance_id, "completions": items}
        _clear(_post(worker.http, "/engine/v1/worker/complete", body), "completion")
        logs = [{"run_id": r["run_id"], "message": c.get("output"), "attributes": c}
                for r, c in zip(runs, completions, strict=False)]
        _clear(_post(worker.http, "/engine/v1/worker/logs", {"logs": logs}), "logs")
    finally:
        worker.close()


def test_after_the_fuzzing_ordinary_runs_complete_with_their_logs(
    http: httpx.Client, api_server: ApiServer, fuzz_keys: dict[str, str]
) -> None:
    """Runs the fuzzers left leased or queued are no concern here: a fresh batch goes
    through lease, logs and completion untouched."""
    worker = ProtocolWorker(api_server.url, fuzz_keys["dev"], ["ordinary"])
    batch = http.post(
        "/api/v1/tasks/ordinary/batch", json={"items": [{"payload": i} for i in range(10)]}
    ).json()
    ids = [r["id"] for r in batch["runs"]]
    runs = worker.dequeue(max_runs=10)
    assert sorted(r["run_id"] for r in runs) == sorted(ids)
    worker.post("/engine/v1/worker/logs", {"logs": [
        {"run_id": r["run_id"], "attempt_number": r["attempt_number"], "message": "hello"}
        for r in runs]})
    results = worker.post("/engine/v1/worker/complete", {
        "instance_id": worker.instance_id,
        "completions": [{"run_id": r["run_id"], "attempt_number": r["attempt_number"],
                         "ok": True, "output": "1"} for r in runs],
    })["results"]
    assert {r["outcome"] for r in results} == {"RUN_FINISHED"}
    with psycopg.connect(api_server.database_url) as conn:
        logged = conn.execute(
            "SELECT count(DISTINCT run_id) FROM run_logs WHERE run_id = ANY(%s)", (ids,)
        ).fetchone()
    assert logged == (10,)
    assert STATS.get("trigger 5xx", 0) == 0 and STATS.get("schemathesis 5xx", 0) == 0
