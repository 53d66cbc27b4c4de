"""Celery app for the benchmark: Redis broker and result backend, prefork pool.

Broker and backend databases come from BENCH_REDIS_BROKER / BENCH_REDIS_BACKEND (the harness
uses dedicated Redis DB numbers and flushes only those).
"""

import os
import time

import httpx  # noqa: F401  (same imports as our task module)
import pydantic  # noqa: F401
from celery import Celery

app = Celery(
    "bench",
    broker=os.environ.get("BENCH_REDIS_BROKER", "redis://127.0.0.1:6379/9"),
    backend=os.environ.get("BENCH_REDIS_BACKEND", "redis://127.0.0.1:6379/10"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@app.task(name="noop")
def noop(x):
    return x


@app.task(name="stamp")
def stamp(x):
    return {"x": x, "t": time.time()}
