"""Fixtures of the engine tests: an HTTP client for a fresh project's dev environment."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import ApiServer


@pytest.fixture
def env(api_server: ApiServer, project_keys: dict[str, str]) -> tuple[httpx.Client, str]:
    """(a client authenticated with the new project's dev key, that key)."""
    client = httpx.Client(
        base_url=api_server.url,
        headers={"Authorization": f"Bearer {project_keys['dev']}"},
        timeout=30,
    )
    return client, project_keys["dev"]
