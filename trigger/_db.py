"""The example project's SQL helper: a thin re-export of :mod:`worker.db` (one fork-safe
pool per executor process; ``TASKS_DATABASE_URL``, else ``DATABASE_URL``)."""

from worker.db import close, pool, sql

__all__ = ["close", "pool", "sql"]
