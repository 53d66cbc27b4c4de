"""Fixtures shared with the end-to-end tests."""

from tests.e2e.conftest import workers  # noqa: F401  (the fixture)
