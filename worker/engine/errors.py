"""Errors the engine raises for requests it refuses. Each carries a :class:`Kind`, never an HTTP
status: the API maps kinds to statuses in one place (``worker/api/errors.py``)."""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    """Why the engine refused."""

    invalid = "invalid"  # the request is malformed or breaks a rule
    unprocessable = "unprocessable"  # well formed, but a value fails its schema
    not_found = "not_found"
    conflict = "conflict"  # the state changed under the request
    forbidden = "forbidden"  # the caller may not do this
    too_large = "too_large"
    too_many = "too_many"  # a per-environment cap is reached; retry after ``retry_after``
    unsupported = "unsupported"  # a content type the engine does not read
    not_configured = "not_configured"  # the server lacks what the action needs


class EngineError(Exception):
    """A request the engine refuses; ``kind`` says why."""

    kind = Kind.invalid
    #: seconds the client should wait before trying again (``Kind.too_many``)
    retry_after: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EngineError):
    kind = Kind.not_found


class PayloadTooLarge(EngineError):
    kind = Kind.too_large


class Conflict(EngineError):
    kind = Kind.conflict


class Forbidden(EngineError):
    kind = Kind.forbidden


class Unprocessable(EngineError):
    kind = Kind.unprocessable
