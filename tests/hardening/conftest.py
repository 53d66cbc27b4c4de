"""Fixtures of the hardening tests: a fresh project's dev client, a protocol worker, and a
direct database connection (to read what was stored, or to plant legacy data)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.rows import dict_row

from tests.conftest import ApiServer
from tests.protocol_worker import ProtocolWorker


@pytest.fixture
def client(api_server: ApiServer, project_keys: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=api_server.url,
        headers={"Authorization": f"Bearer {project_keys['dev']}"},
        timeout=60,
    ) as http:
        yield http


@pytest.fixture
def db(api_server: ApiServer) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with psycopg.connect(api_server.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def protocol_worker(api_server: ApiServer, key: str, *tasks: str) -> ProtocolWorker:
    return ProtocolWorker(api_server.url, key, list(tasks))


def trigger(client: httpx.Client, task: str, payload: Any = None, **options: Any) -> str:
    response = client.post(
        f"/api/v1/tasks/{task}/trigger", json={"payload": payload, "options": options}
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def nested(depth: int, leaf: Any = 1) -> Any:
    """A JSON value ``depth`` levels deep ({"a": {"a": ... leaf}})."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def deep_text(depth: int, leaf: str = "1") -> str:
    """JSON text of a value ``depth`` levels deep (deeper than any encoder will write)."""
    return '{"a":' * depth + leaf + "}" * depth


def assert_clear_4xx(response: httpx.Response, *statuses: int) -> None:
    """A 4xx with the documented ``{"error": "..."}`` JSON body."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    if statuses:
        assert response.status_code in statuses, (response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("application/json"), response.text[:200]
    body = response.json()
    assert isinstance(body.get("error"), str) and body["error"], body
