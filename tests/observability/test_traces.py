"""Every run is an OpenTelemetry trace (issue 14): real API, real workers, a real OTLP receiver
(tests/observability/collector.py) getting the same spans as the API."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

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
    # the SDK (its export threads) lives in the executors, never in the zygote they fork from
    [zygote] = psutil.Process(workers[0].process.pid).children()
    assert zygote.num_threads() == 1
    assert any(executor.num_threads() > 1 for executor in workers[0].executors())


LIFECYCLE = """
import asyncio, os
from pathlib import Path
from worker import step, task, wait


@task(id="obs-napper")
async def napper(payload, ctx):
    charged = await step("charge", lambda: 7)
    await wait.for_(seconds=6)              # durable: checkpoints at once, replays after
    return {"charged": charged, "pid": os.getpid()}


@task(id="obs-doomed", retry={"max_attempts": 1})
async def doomed(payload, ctx):
    Path(payload["pidfile"]).write_text(str(os.getpid()))
    await asyncio.sleep(120)
"""


def test_checkpoint_and_resume_continue_one_trace(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess], collector: Collector
) -> None:
    project = make_project(tmp_path, api_server, {"life.py": LIFECYCLE})
    workers.append(start_worker(project, name="a", **_collector_env(collector)))
    with project.client() as client:
        run_id = trigger(client, "obs-napper", {})
        run = wait_final(client, run_id)
        assert run["status"] == "COMPLETED", run
        tree = wait_tree(client, run_id, 6)
    spans = collector.of_run(run_id)
    deadline = time.monotonic() + 20
    while sum(s.name == "Attempt 1" for s in spans) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        spans = collector.of_run(run_id)
    attempts = [s for s in spans if s.name == "Attempt 1"]
    assert len(attempts) == 2, [s.name for s in spans]  # before the checkpoint, after it
    assert {s.trace_id for s in spans} == {tree["traceId"]}
    first = next(s for s in attempts if s.attributes.get("trigger.checkpointed"))
    resumed = next(s for s in attempts if s.attributes.get("trigger.resumed"))
    assert first.span_id != resumed.span_id
    assert first.parent_span_id == resumed.parent_span_id == tree["rootSpan"]["id"]
    # the step ran once (the replay returned its journaled result without a second span)
    assert [s.name for s in spans].count("step charge") == 1
    wait_span = next(s for s in spans if s.name == "wait wait_duration")
    assert wait_span.parent_span_id == first.span_id
    assert wait_span.attributes["trigger.checkpointed"] is True
    resume_span = next(s for s in spans if s.name == "resume wait_duration")
    assert resume_span.parent_span_id == resumed.span_id
    assert all(s.status_code != 2 for s in spans)
    assert [c["message"] for c in tree["rootSpan"]["children"]] == ["Attempt 1", "Attempt 1"]


def test_killed_executor_attempt_span_is_closed_with_an_error(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess], collector: Collector
) -> None:
    project = make_project(tmp_path, api_server, {"life.py": LIFECYCLE})
    workers.append(start_worker(project, **_collector_env(collector)))
    pidfile = tmp_path / "doomed.pid"
    with project.client() as client:
        run_id = trigger(client, "obs-doomed", {"pidfile": str(pidfile)})
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
        run = wait_final(client, run_id)
        assert run["status"] == "CRASHED", run
        tree = wait_tree(client, run_id, 2)
    root = tree["rootSpan"]
    assert root["data"]["isError"] and not root["data"]["isPartial"]
    [attempt] = [c for c in root["children"] if c["message"] == "Attempt 1"]
    assert attempt["data"]["isError"] and attempt["data"]["status"] == "ERROR"
    assert attempt["data"]["properties"]["trigger.recorded_by"] == "supervisor"
    assert attempt["data"]["events"][0]["name"] == "exception"
    # the id the executor would have used: nothing it exported before dying is orphaned
    assert attempt["parentId"] == root["id"]


INSTRUMENTED = """
import os
import httpx, psycopg
from worker import task


@task(id="obs-io")
async def io(payload, ctx):
    async with httpx.AsyncClient() as client:
        status = (await client.get(os.environ["TRIGGER_API_URL"] + "/healthz")).status_code
    with psycopg.connect(payload["dsn"]) as conn:
        one = conn.execute("SELECT 1 AS one").fetchone()[0]
    return {"status": status, "one": one}
"""

INSTRUMENTED_CONFIG = """
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from worker import define_config

config = define_config(project={ref!r}, dirs=["trigger"], max_duration=60, telemetry={{
    "instrumentations": [HTTPXClientInstrumentor(), PsycopgInstrumentor()],
    "exporters": [OTLPSpanExporter(endpoint={collector!r})],
    "resource": {{"deployment.environment": "test"}},
}})
"""


def test_httpx_and_psycopg_spans_nest_under_the_attempt(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess], collector: Collector
) -> None:
    project = make_project(tmp_path, api_server, {"io.py": INSTRUMENTED})
    # the collector is one of the config's exporters here (no OTEL_* variables)
    (project.dir / "trigger_config.py").write_text(INSTRUMENTED_CONFIG.format(
        ref=project.ref, collector=f"{collector.url}/v1/traces"))
    workers.append(start_worker(project))
    with project.client() as client:
        run_id = trigger(client, "obs-io", {"dsn": api_server.database_url})
        run = wait_final(client, run_id)
        assert run["status"] == "COMPLETED" and run["output"] == {"status": 200, "one": 1}, run
        got = wait_spans(collector, run_id, {"Attempt 1", "GET"})
        deadline = time.monotonic() + 20
        while not any(s.attributes.get("db.system") == "postgresql"
                      for s in collector.of_run(run_id)):
            assert time.monotonic() < deadline, [s.name for s in collector.of_run(run_id)]
            time.sleep(0.1)
        tree = wait_tree(client, run_id, 4)
    attempt = got["Attempt 1"]
    http = got["GET"]
    sql = next(s for s in collector.of_run(run_id) if s.attributes.get("db.system") == "postgresql")
    assert http.parent_span_id == attempt.span_id and sql.parent_span_id == attempt.span_id
    assert "SELECT" in sql.name or "SELECT" in str(sql.attributes.get("db.statement"))
    assert attempt.resource["deployment.environment"] == "test"
    [attempt_node] = tree["rootSpan"]["children"]
    assert {c["id"] for c in attempt_node["children"]} >= {http.span_id, sql.span_id}


def test_a_lost_worker_attempt_span_is_closed_by_the_engine(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]
) -> None:
    project = make_project(tmp_path, api_server, {"life.py": LIFECYCLE})
    worker = start_worker(project)
    workers.append(worker)
    pidfile = tmp_path / "doomed.pid"
    with project.client() as client:
        run_id = trigger(client, "obs-doomed", {"pidfile": str(pidfile)})
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert time.monotonic() < deadline, "the run never started"
            time.sleep(0.05)
        worker.signal_all(signal.SIGKILL)  # the whole replica: nobody left to close the span
        run = wait_final(client, run_id)  # rescued once its 3 s lease expires
        assert run["status"] in ("CRASHED", "SYSTEM_FAILURE", "FAILED"), run
        tree = wait_tree(client, run_id, 2)
    [attempt] = [c for c in tree["rootSpan"]["children"] if c["message"] == "Attempt 1"]
    assert attempt["data"]["isError"] and attempt["parentId"] == tree["rootSpan"]["id"]
    assert attempt["data"]["properties"]["trigger.recorded_by"] == "engine"
    assert attempt["data"]["properties"]["trigger.error.type"] == "TASK_RUN_STALLED_EXECUTING"
