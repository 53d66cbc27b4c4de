"""The environment variables of a run's environment (``env_vars`` of a leased run, set with
Trigger.dev's ``envvars.*``), set in the executor's ``os.environ`` for that run only."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def run_environment(variables: Any) -> Iterator[None]:
    if not isinstance(variables, dict) or not variables:
        yield
        return
    before = {name: os.environ.get(name) for name in variables}
    os.environ.update({str(k): str(v) for k, v in variables.items()})
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
