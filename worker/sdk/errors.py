"""Exceptions of the public SDK."""

from __future__ import annotations


class AbortTaskRunError(Exception):
    """Raise inside a task to fail the attempt and never retry it."""


class OutOfMemoryError(Exception):
    """Raise inside a task to have the attempt classified as out-of-memory."""


class CompleteTaskWithOutput(Exception):
    """Raise inside a task to end the run successfully with ``output``."""

    def __init__(self, output: object = None) -> None:
        super().__init__("task completed early with output")
        self.output = output


class MaxDurationExceededError(Exception):
    """Raised inside a task whose attempt ran past ``max_duration`` (run ends TIMED_OUT)."""


class TaskRunCanceledError(Exception):
    """Raised inside a task whose run was canceled while it executed."""


class ApiError(Exception):
    """The API answered with an error. ``status`` is the HTTP status, ``body`` its JSON."""

    def __init__(self, status: int, message: str, body: object = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.body = body


class AuthenticationError(ApiError):
    """401/403: the secret key is missing, unknown or not allowed to do this."""


class NotFoundError(ApiError):
    """404: the run, task or resource does not exist in this environment."""


class ConfigurationError(RuntimeError):
    """The SDK is not configured (TRIGGER_API_URL / TRIGGER_SECRET_KEY) or misconfigured."""


class Suspended(BaseException):
    """Raised inside a task when its run has checkpointed; the executor reports it and the
    run resumes (replays) once its waitpoints complete. Never catch it (worker/sdk/durable.py)."""
