"""Fixtures reused by the compatibility suite: real worker processes (tests/e2e) and a fresh
project's client (tests/engine)."""

from tests.e2e.conftest import workers  # noqa: F401  (a pytest fixture)
from tests.engine.conftest import env  # noqa: F401  (a pytest fixture)
