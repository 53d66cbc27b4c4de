"""The attempt span written without the SDK (worker/runtime/attempt_span.py) stores what the
SDK's span stored: the same attributes, events, status and parents, through a real worker,
the real API and Postgres. The SDK's span is what a worker uses when a sampler is configured
(``OTEL_TRACES_SAMPLER``; ``always_on`` records what the default records), so one worker of
each kind runs the same task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ApiServer
from tests.e2e.conftest import WorkerProcess, make_project, start_worker, trigger, wait_final
from tests.observability.test_traces import wait_tree

TASKS = """
from opentelemetry import trace
from worker import task


@task(id="as-rich", retry={"max_attempts": 1})
async def rich(payload, ctx):
    span = trace.get_current_span()
    span.set_attribute("user.count", 3)
    span.set_attributes({"user.tags": ["a", "b"], "user.ratio": 0.5, "user.none": None})
    span.add_event("halfway", {"step": 2, "ok": True})
    span.update_name("Attempt 1")  # a no-op rename: still the attempt
    with trace.get_tracer("user").start_as_current_span("inner") as inner:
        inner.set_attribute("k", "v")
    if payload.get("fail"):
        try:
            raise ValueError("bad input")
        except ValueError as exc:
            span.record_exception(exc, {"extra": "yes"})
        raise RuntimeError("it failed")
    return 1
"""


def _attempt(client: httpx.Client, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's attempt node and its root, once the attempt and the inner span are stored."""
    tree = wait_tree(client, run_id, 3)
    root = tree["rootSpan"]
    [attempt] = [c for c in root["children"] if c["message"] == "Attempt 1"]
    assert attempt["parentId"] == root["id"]
    [inner] = [c for c in attempt["children"] if c["message"] == "inner"]
    assert inner["parentId"] == attempt["id"]
    assert inner["data"]["properties"]["k"] == "v"
    return attempt, root


def _content(attempt: dict[str, Any], run_id: str) -> dict[str, Any]:
    """What must not depend on how the span was made (ids, times and stack texts aside)."""
    data = attempt["data"]
    properties = dict(data["properties"])
    assert properties.pop("ctx.run.id") == run_id
    events = [{"name": e["name"], "attributes": {
        k: v for k, v in e["attributes"].items() if k != "exception.stacktrace"}}
        for e in data["events"]]
    return {"properties": properties, "events": events, "status": data["status"],
            "isError": data["isError"], "message": attempt["message"]}


def _runs(client: httpx.Client) -> dict[str, dict[str, Any]]:
    out = {}
    for name, payload in (("ok", {}), ("failed", {"fail": True})):
        run_id = trigger(client, "as-rich", payload)
        run = wait_final(client, run_id)
        assert run["status"] == ("COMPLETED" if name == "ok" else "FAILED"), run
        attempt, _ = _attempt(client, run_id)
        out[name] = _content(attempt, run_id)
    return out


def test_attempt_span_content_matches_the_sdk_span(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"rich.py": TASKS})
    fast = start_worker(project, name="fast")
    workers.append(fast)
    with project.client() as client:
        by_hand = _runs(client)
    fast.stop()
    workers.append(start_worker(project, name="sdk",
                                OTEL_TRACES_SAMPLER="always_on"))
    with project.client() as client:
        by_sdk = _runs(client)
    assert by_hand == by_sdk
    ok, failed = by_hand["ok"], by_hand["failed"]
    assert ok["properties"]["user.count"] == 3 and ok["properties"]["user.tags"] == ["a", "b"]
    assert ok["properties"]["user.ratio"] == 0.5 and ok["properties"]["user.none"] is None
    assert ok["properties"]["trigger.span.kind"] == "attempt"
    assert ok["properties"]["ctx.task.id"] == "as-rich" and not ok["isError"]
    assert [e["name"] for e in ok["events"]] == ["halfway"]
    assert failed["isError"] and failed["status"] == "ERROR"
    assert [e["name"] for e in failed["events"]] == ["halfway", "exception"]
    assert ok["events"][0]["attributes"] == {"step": 2, "ok": True}
    exception = failed["events"][1]["attributes"]
    assert exception == {"exception.type": "ValueError", "exception.message": "bad input",
                         "exception.escaped": "False", "extra": "yes"}
