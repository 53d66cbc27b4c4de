"""Procrastinate app for the benchmark (Postgres from BENCH_PROCRASTINATE_DSN)."""

import os
import time

import httpx  # noqa: F401  (same imports as our task module)
import pydantic  # noqa: F401
from procrastinate import App, PsycopgConnector

app = App(connector=PsycopgConnector(conninfo=os.environ.get(
    "BENCH_PROCRASTINATE_DSN", "postgresql://postgres@127.0.0.1:5432/test")))


@app.task(name="noop")
async def noop(x):
    return x


@app.task(name="stamp")
async def stamp(x, path):
    """Procrastinate keeps no return values: the start time goes to a file the caller reads."""
    t = time.time()
    with open(path, "w") as f:
        f.write(repr(t))
    return x
