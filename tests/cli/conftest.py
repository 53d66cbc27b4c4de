from tests.e2e.conftest import workers  # noqa: F401  (the fixture)
