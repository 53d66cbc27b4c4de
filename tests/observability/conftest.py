from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.conftest import workers  # noqa: F401  (fixture)
from tests.observability.collector import Collector


@pytest.fixture
def collector() -> Iterator[Collector]:
    found = Collector()
    yield found
    found.close()
