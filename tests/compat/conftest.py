"""Fixtures of tests/e2e (real worker processes) reused by the compatibility suite."""

from tests.e2e.conftest import workers  # noqa: F401  (a pytest fixture)
