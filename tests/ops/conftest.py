"""Fixtures of the operations tests: a second API replica on the same database (with small
stream caps), and a fresh project with its ref."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.conftest import ApiServer, start_api, stop_process
from worker.engine.keys import create_project


@pytest.fixture(scope="module")
def replica(api_server: ApiServer, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[ApiServer]:
    """Another API process on the session's database: what one replica revokes, the other
    must refuse too."""
    server = start_api(api_server.database_url, tmp_path_factory.mktemp("replica") / "api.log",
                       TRIGGER_MAX_SSE_PER_ENV="2", TRIGGER_MAX_LONG_POLLS_PER_ENV="1")
    yield server
    stop_process(server.process)


@dataclass
class Project:
    ref: str
    keys: dict[str, str]


@pytest.fixture
def project(api_server: ApiServer) -> Project:
    ref = f"ops-{uuid.uuid4().hex[:8]}"
    return Project(ref, create_project(api_server.database_url, ref))
