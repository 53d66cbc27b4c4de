"""Runs whose completion call is in flight keep their lease (issue 10, defect 3): a real worker
talks to the real API through a real HTTP proxy that holds ``/complete`` longer than a lease."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.conftest import ApiServer, free_port
from tests.runtime.live import Worker, trigger, wait_final
from tests.runtime.projects import write_project

TASKS = """
from worker.sdk.task import task


@task(id="hb-quick", retry={"max_attempts": 3})
async def quick(payload):
    return "done"
"""
#: longer than the test API's 3 s lease (and its 0.5 s rescuer)
HOLD_SECONDS = 5.0


def slow_complete_proxy(target: str) -> Starlette:
    upstream = httpx.AsyncClient(base_url=target, timeout=60)

    async def forward(request: Request) -> Response:
        if request.url.path == "/engine/v1/worker/complete":
            await asyncio.sleep(HOLD_SECONDS)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        answer = await upstream.request(
            request.method, request.url.path, params=request.query_params,
            content=await request.body(), headers=headers,
        )
        return Response(answer.content, answer.status_code,
                        media_type=answer.headers.get("content-type"))

    methods = ["GET", "POST", "PUT", "DELETE"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


async def test_a_run_in_a_slow_completion_call_keeps_its_lease(
    api_server: ApiServer, project_keys: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(
        slow_complete_proxy(api_server.url), host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    project = write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS})
    key = project_keys["dev"]
    worker: Worker | None = None
    try:
        while not server.started:
            await asyncio.sleep(0.02)
        worker = Worker(project, f"http://127.0.0.1:{port}", key, concurrency=1)
        await worker.wait_event("version_registered")
        async with httpx.AsyncClient(base_url=api_server.url, timeout=30,
                                     headers={"Authorization": f"Bearer {key}"}) as client:
            run_id = await trigger(client, "hb-quick", {})
            run: dict[str, Any] = await wait_final(client, run_id, timeout=40)
        assert run["status"] == "COMPLETED" and run["output"] == "done", run
        assert len(run["attempts"]) == 1, run["attempts"]  # never rescued while completing
    finally:
        if worker is not None:
            await worker.close()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
