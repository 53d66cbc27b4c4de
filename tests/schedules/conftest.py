"""Fixtures for schedule tests: a client of the real API, a task registered by a protocol
worker, and an engine pool to run one cron sweep at a chosen (frozen) time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker
from worker.engine.db import Pool, open_pool


@pytest_asyncio.fixture(loop_scope="session", scope="session")
async def pool(database_url: str) -> AsyncIterator[Pool]:
    engine_pool = await open_pool(database_url, min_size=1, max_size=4)
    yield engine_pool
    await engine_pool.close()


@pytest.fixture
def api(api_server: ApiServer, project_keys: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=api_server.url, headers=api_server.headers(project_keys["dev"]),
                        timeout=30)


def register(api: httpx.Client, tasks: list[dict[str, Any]], content_hash: str) -> dict[str, Any]:
    """Register a manifest as a worker would (declarative schedules sync here)."""
    reply = api.post("/engine/v1/worker/register", json={
        "instance_id": "00000000-0000-4000-8000-" + content_hash[-12:].rjust(12, "0"),
        "content_hash": content_hash,
        "tasks": [{"queue": {"name": f"task/{t['id']}"}, **t} for t in tasks],
    })
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def worker_for(api_server: ApiServer, key: str, *tasks: str) -> ProtocolWorker:
    return ProtocolWorker(api_server.url, key, list(tasks))
