"""The one place task code reads environment variables, with errors that say what to set."""

from __future__ import annotations

import os


class MissingEnvError(RuntimeError):
    """A required environment variable is not set (or is empty)."""


def required(*names: str) -> str:
    """The value of the first of ``names`` that is set; raise naming them all if none is."""
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    listed = " or ".join(names)
    raise MissingEnvError(
        f"environment variable {listed} is not set; set it in the worker's environment "
        "(.env, docker-compose.yml or your deployment)"
    )


def optional(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def optional_int(name: str, default: int) -> int:
    value = optional(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise MissingEnvError(f"environment variable {name} must be an integer, got {value!r}")\
            from None


def database_url() -> str:
    """Where task code's SQL goes: ``TASKS_DATABASE_URL``, else ``DATABASE_URL``."""
    return required("TASKS_DATABASE_URL", "DATABASE_URL")
