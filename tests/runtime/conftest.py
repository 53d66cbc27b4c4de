"""Fixtures of the runtime tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.conftest import ApiServer
from worker.runtime.api_client import WorkerApi


@pytest.fixture
async def api(api_server: ApiServer, project_keys: dict[str, str]) -> AsyncIterator[WorkerApi]:
    """The worker protocol's client (a new worker instance) of the test API, on the dev key."""
    client = WorkerApi(api_server.url, project_keys["dev"], str(uuid.uuid4()))
    yield client
    await client.close()
