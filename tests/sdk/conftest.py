"""The SDK pointed at a fresh project of the test API, with a registered protocol worker."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.protocol_worker import ProtocolWorker
from worker import configure
from worker.sdk import client

#: the task the ``sdk`` fixture's worker registers
TASK = "sdk-echo"


@pytest.fixture
def sdk(api_server: Any, project_keys: dict[str, str]) -> Iterator[ProtocolWorker]:
    """Point the SDK at a fresh project of the test API; yield a registered protocol worker."""
    saved = dict(client._settings)
    configure(api_url=api_server.url, secret_key=project_keys["dev"])
    worker = ProtocolWorker(api_server.url, project_keys["dev"], [TASK])
    yield worker
    worker.close()
    client._settings.update(saved)
    client._clients.clear()
