"""Every run is an OpenTelemetry trace (issue 14): real API, real workers, a real OTLP receiver
(tests/observability/collector.py) getting the same spans as the API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ApiServer
from tests.e2e.conftest import WorkerProcess, make_project, start_worker, trigger, wait_final
from tests.observability.collector import Collector, ReceivedSpan

TASKS = """
from opentelemetry import trace
from worker import logger, task, tasks


@task(id="obs-child",
      on_start=lambda payload, params: logger.info("child starting"),
      on_success=lambda payload, output, params: logger.info("child done"))
async def child(payload, ctx):
    with logger.trace("compute", {"n": payload["n"]}) as span:
        span.set_attribute("done", True)
        logger.info("inside compute", {"api_key": "hidden"})
    with trace.get_tracer("user").start_as_current_span("plain-otel"):
        print("printed line")
    return payload["n"] * 2


@task(id="obs-parent")
async def parent(payload, ctx):
    result = await tasks.trigger_and_wait("obs-child", {"n": 21})
    return result.unwrap()
"""


def _collector_env(collector: Collector) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{collector.url}/v1/traces",
            "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": f"{collector.url}/v1/logs"}


def wait_spans(collector: Collector, run_id: str, names: set[str],
               timeout: float = 30) -> dict[str, ReceivedSpan]:
    deadline = time.monotonic() + timeout
    while True:
        found = {s.name: s for s in collector.of_run(run_id)}
        if names <= set(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id}: spans {sorted(names - set(found))} never "
                                 f"arrived (got {sorted(found)})")
        time.sleep(0.1)


def wait_tree(client: httpx.Client, run_id: str, count: int, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        reply = client.get(f"/api/v1/runs/{run_id}/trace")
        assert reply.status_code == 200, reply.text
        tree = reply.json()["trace"]
        if tree["spanCount"] >= count:
            return tree
        if time.monotonic() > deadline:
            raise AssertionError(f"trace of {run_id} has {tree['spanCount']} spans: {tree}")
        time.sleep(0.1)


def nodes(tree: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """name -> node (first seen), walking the tree; each node gets its parent's id checked."""
    out: dict[str, dict[str, Any]] = {}
    stack = [(tree["rootSpan"], None)]
    while stack:
        node, parent = stack.pop()
        if parent is not None:
            assert node["parentId"] == parent["id"] or node["data"]["kind"] == "run", node
        out.setdefault(node["message"], node)
        stack.extend((c, node) for c in node["children"])
    return out


def test_parent_and_child_runs_form_one_trace(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess], collector: Collector
) -> None:
    project = make_project(tmp_path, api_server, {"obs.py": TASKS})
    workers.append(start_worker(project, **_collector_env(collector)))
    with project.client() as client:
        parent_id = trigger(client, "obs-parent", {})
        parent = wait_final(client, parent_id)
        assert parent["status"] == "COMPLETED", parent
        assert parent["output"] == 42
        child_id = client.get(f"/api/v3/runs/{parent_id}").json()["relatedRuns"]["children"][0][
            "id"]
        got_parent = wait_spans(collector, parent_id, {"Attempt 1", "trigger_and_wait obs-child"})
        got_child = wait_spans(collector, child_id, {"Attempt 1", "on_start()", "on_success()",
                                                     "compute", "plain-otel"})
        tree = wait_tree(client, parent_id, 9)

    # one trace id for everything: the parent's, as the API stored it
    trace_id = tree["traceId"]
    assert {s.trace_id for s in [*got_parent.values(), *got_child.values()]} == {trace_id}
    by_name = nodes(tree)
    parent_run = tree["rootSpan"]
    assert parent_run["runId"] == parent_id and parent_run["data"]["kind"] == "run"
    # parent run span → parent attempt → trigger_and_wait span → child run span → child attempt
    parent_attempt = got_parent["Attempt 1"]
    assert parent_attempt.parent_span_id == parent_run["id"]
    trigger_span = got_parent["trigger_and_wait obs-child"]
    assert trigger_span.parent_span_id == parent_attempt.span_id
    child_run = next(n for n in parent_run["children"][0]["children"][0]["children"]
                     if n["data"]["kind"] == "run")
    assert child_run["runId"] == child_id and child_run["parentId"] == trigger_span.span_id
    child_attempt = got_child["Attempt 1"]
    assert child_attempt.parent_span_id == child_run["id"]
    # hooks, logger.trace and the plain OpenTelemetry API nest under the child's attempt
    for name in ("on_start()", "on_success()", "compute", "plain-otel"):
        assert got_child[name].parent_span_id == child_attempt.span_id, name
    assert got_child["compute"].attributes["n"] == 21
    assert got_child["compute"].attributes["done"] is True
    assert child_attempt.resource["service.name"] == project.ref

    # /trace returns the same tree the collector saw (same ids, same parents)
    for span in [*got_parent.values(), *got_child.values()]:
        node = by_name.get(span.name) if span.name != "Attempt 1" else None
        if node is not None and node["runId"] == span.attributes["ctx.run.id"]:
            assert node["id"] == span.span_id and node["parentId"] == span.parent_span_id
    attempt_nodes = [c for c in child_run["children"] if c["message"] == "Attempt 1"]
    assert [n["id"] for n in attempt_nodes] == [child_attempt.span_id]
    assert {c["message"] for c in attempt_nodes[0]["children"]} >= {
        "on_start()", "on_success()", "compute", "plain-otel"}

    # logs carry their span: through the API and as OpenTelemetry log records
    with project.client() as client:
        logs = client.get(f"/api/v1/runs/{child_id}/logs").json()["data"]
        warn = client.get(f"/api/v1/runs/{child_id}/logs", params={"level": "warn"}).json()
        bad = client.get(f"/api/v1/runs/{child_id}/logs", params={"level": "loud"})
    inside = next(line for line in logs if line["message"] == "inside compute")
    assert inside["spanId"] == got_child["compute"].span_id
    assert inside["attributes"] == {"api_key": "[REDACTED]"}
    printed = next(line for line in logs if line["message"] == "printed line")
    assert printed["spanId"] == got_child["plain-otel"].span_id
    assert warn["data"] == [] and bad.status_code == 400
    deadline = time.monotonic() + 20
    while not any(r["body"] == "inside compute" for r in collector.logs):
        assert time.monotonic() < deadline, "no OpenTelemetry log record arrived"
        time.sleep(0.1)
    record = next(r for r in collector.logs if r["body"] == "inside compute")
    assert record["span_id"] == got_child["compute"].span_id and record["trace_id"] == trace_id


def test_external_traceparent_is_honoured(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess], collector: Collector
) -> None:
    project = make_project(tmp_path, api_server, {"obs.py": TASKS})
    workers.append(start_worker(project, **_collector_env(collector)))
    outside_trace, outside_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with project.client() as client:
        reply = client.post("/api/v1/tasks/obs-child/trigger",
                            json={"payload": {"n": 1}},
                            headers={"traceparent": f"00-{outside_trace}-{outside_span}-01"})
        run_id = reply.json()["id"]
        assert wait_final(client, run_id)["status"] == "COMPLETED"
        got = wait_spans(collector, run_id, {"Attempt 1"})
        tree = client.get(f"/api/v1/runs/{run_id}/trace").json()["trace"]
    assert tree["traceId"] == outside_trace == got["Attempt 1"].trace_id
    assert tree["rootSpan"]["parentId"] == outside_span
    assert got["Attempt 1"].parent_span_id == tree["rootSpan"]["id"]
