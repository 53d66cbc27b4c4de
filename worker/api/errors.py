"""Engine error kinds to HTTP: the one place that knows which status each kind answers with."""

from __future__ import annotations

from worker.engine.errors import EngineError, Kind

STATUS: dict[Kind, int] = {
    Kind.invalid: 400,
    Kind.forbidden: 403,
    Kind.not_found: 404,
    Kind.conflict: 409,
    Kind.too_large: 413,
    Kind.unsupported: 415,
    Kind.unprocessable: 422,
    Kind.too_many: 429,
    Kind.not_configured: 501,
}


def status_of(exc: EngineError) -> int:
    return STATUS[exc.kind]


def headers_of(exc: EngineError) -> dict[str, str] | None:
    if exc.retry_after is not None:
        return {"Retry-After": str(exc.retry_after)}
    return None
