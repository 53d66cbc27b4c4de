"""Errors the engine raises for bad requests; the API turns each into its HTTP status."""

from __future__ import annotations


class EngineError(Exception):
    """A request the engine refuses. ``status`` is the HTTP status the API answers with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(EngineError):
    status = 404


class PayloadTooLarge(EngineError):
    status = 413


class Conflict(EngineError):
    status = 409
