"""Benchmark tasks. The module imports pydantic and httpx like a typical task module does, so
warm-vs-cold and memory numbers include them (the peers' task modules import them too)."""

import time

import httpx  # noqa: F401  (the import is the point)
import pydantic  # noqa: F401

from worker import queue, task


async def noop_fn(payload, ctx=None):
    """Returns its argument."""
    return payload


async def stamp_fn(payload, ctx=None):
    """Returns its argument and the wall-clock time the body started."""
    return {"x": payload, "t": time.time()}


noop = task(id="noop", run=noop_fn)
stamp = task(id="stamp", run=stamp_fn)


# The scale-out scenario (bench/scaleout.py): a queue whose limit the replicas must share.
limited = task(id="limited", run=noop_fn, queue=queue("bench-limited", concurrency_limit=3))
