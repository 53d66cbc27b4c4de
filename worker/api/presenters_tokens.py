"""Waitpoint tokens as Trigger.dev's SDK reads them (``WaitpointTokenItem``,
``WaitpointRetrieveTokenResponse`` in ``@trigger.dev/core``): a ``url`` to complete the token
with a plain POST, optional fields absent rather than null, and ``TIMED_OUT`` for a token that
timed out (docs/api.md)."""

from __future__ import annotations

from typing import Any

from worker.engine import waitpoints


def present_token(row: dict[str, Any], url: str) -> dict[str, Any]:
    token = {k: v for k, v in waitpoints.present(row).items() if v is not None}
    token["url"] = url
    if token["status"] == "COMPLETED" and row["output_is_error"]:
        token["status"] = "TIMED_OUT"
    return token
