"""Waitpoints on the wire (camelCase). Tokens as Trigger.dev's SDK reads them
(``WaitpointTokenItem``, ``WaitpointRetrieveTokenResponse`` in ``@trigger.dev/core``): a ``url`` to
complete the token with a plain POST, optional fields absent rather than null, and ``TIMED_OUT``
for a token that timed out (docs/api.md)."""

from __future__ import annotations

from datetime import datetime

from worker.engine.db import Row


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def present_waitpoint(row: Row) -> dict[str, object]:
    """A waitpoint as the API shows it."""
    return {
        "id": row["id"],
        "type": row["type"],
        "status": row["status"],
        "output": row["output"],
        "outputType": row["output_type"],
        "outputIsError": row["output_is_error"],
        "idempotencyKey": row["idempotency_key"],
        "idempotencyKeyExpiresAt": _iso(row["idempotency_key_expires_at"]),
        "timeoutAt": _iso(row["complete_after"]) if row["type"] == "TOKEN" else None,
        "completeAfter": _iso(row["complete_after"]),
        "tags": row["tags"],
        "createdAt": _iso(row["created_at"]),
        "completedAt": _iso(row["completed_at"]),
    }


def present_token(row: Row, url: str) -> dict[str, object]:
    token = {k: v for k, v in present_waitpoint(row).items() if v is not None}
    token["url"] = url
    if token["status"] == "COMPLETED" and row["output_is_error"]:
        token["status"] = "TIMED_OUT"
    return token
