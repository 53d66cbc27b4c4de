"""``trigger mcp`` through the ``mcp`` client library: a real MCP server process over stdio,
against a real API process and a real ``trigger worker``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from tests.conftest import ROOT, ApiServer
from tests.e2e.conftest import WorkerProcess, make_project, start_worker, workers  # noqa: F401

TASKS = """
import asyncio
from pydantic import BaseModel
from worker import logger, schema_task, task


class Greeting(BaseModel):
    name: str
    times: int = 1


@schema_task(id="greet", schema=Greeting)
async def greet(payload: Greeting, ctx):
    logger.info("greeting", name=payload.name)
    return {"text": " ".join([f"hello {payload.name}"] * payload.times)}


@task(id="slow")
async def slow(payload, ctx):
    await asyncio.sleep(60)
"""


def _result(reply: Any) -> Any:
    assert not reply.is_error, reply.content
    if getattr(reply, "structured_content", None) is not None:
        return reply.structured_content
    return json.loads(reply.content[0].text)


async def _until(session: ClientSession, run_id: str, statuses: set[str]) -> dict[str, Any]:
    with anyio.fail_after(60):
        while True:
            run = _result(await session.call_tool("get_run", {"run_id": run_id}))
            if run["status"] in statuses:
                return dict(run)
            await anyio.sleep(0.1)


async def test_mcp_tools_against_a_real_api_and_worker(
    api_server: ApiServer, tmp_path: Path, workers: list[WorkerProcess]  # noqa: F811
) -> None:
    project = make_project(tmp_path, api_server, {"tasks.py": TASKS})
    workers.append(start_worker(project))
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "worker", "mcp"], cwd=str(ROOT),
        env={**os.environ, "PYTHONPATH": str(ROOT), "TRIGGER_API_URL": api_server.url,
             "TRIGGER_SECRET_KEY": project.key})
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        names = {tool.name for tool in (await session.list_tools()).tools}
        assert names >= {"list_tasks", "trigger_task", "get_run", "get_run_logs",
                         "get_run_trace", "list_runs", "cancel_run", "replay_run"}

        tasks = {t["id"]: t for t in _result(await session.call_tool("list_tasks", {}))["data"]}
        assert set(tasks) == {"greet", "slow"}
        schema = tasks["greet"]["payloadSchema"]
        assert schema["properties"]["name"]["type"] == "string" and "name" in schema["required"]

        made = _result(await session.call_tool(
            "trigger_task", {"task_id": "greet", "payload": {"name": "ada", "times": 2},
                             "options": {"tags": ["mcp"]}}))
        run = await _until(session, made["id"], {"COMPLETED", "FAILED"})
        assert run["status"] == "COMPLETED"
        assert run["output"] == {"text": "hello ada hello ada"}
        logs = _result(await session.call_tool("get_run_logs", {"run_id": made["id"]}))["data"]
        assert any(line["message"] == "greeting" for line in logs)
        trace = _result(await session.call_tool("get_run_trace", {"run_id": made["id"]}))
        assert trace["trace"]["rootSpan"]["runId"] == made["id"]

        bad = await session.call_tool("trigger_task", {"task_id": "greet", "payload": {}})
        assert bad.is_error and "name" in bad.content[0].text  # the API's message, kept

        slow = _result(await session.call_tool("trigger_task", {"task_id": "slow"}))
        await _until(session, slow["id"], {"EXECUTING"})
        _result(await session.call_tool("cancel_run", {"run_id": slow["id"]}))
        assert (await _until(session, slow["id"], {"CANCELED"}))["status"] == "CANCELED"

        listed = _result(await session.call_tool(
            "list_runs", {"task": "greet", "status": "COMPLETED", "tag": "mcp"}))["data"]
        assert [r["id"] for r in listed] == [made["id"]]

        again = _result(await session.call_tool("replay_run", {"run_id": made["id"]}))
        replayed = await _until(session, again["id"], {"COMPLETED", "FAILED"})
        assert replayed["output"] == {"text": "hello ada hello ada"}
        missing = await session.call_tool("get_run", {"run_id": "run_nope"})
        assert missing.is_error and "404" in missing.content[0].text
