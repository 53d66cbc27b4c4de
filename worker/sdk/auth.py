"""``auth``: public access tokens for browsers and other untrusted clients.

``await auth.create_public_token(scopes=..., expiration_time="15m")`` asks the API (with the
secret key) for a short-lived token. Scopes are flat strings (``"read:runs:run_123"``) or
Trigger.dev's object form, flattened here::

    {"read": {"runs": ["run_123"], "tags": ["user_1"], "batch": "batch_1"},
     "write": {"waitpoints": ["waitpoint_1"]}}

``{"read": {"runs": True}}`` grants every run. The token can read what its scopes name through
the realtime endpoints (``runs.subscribe_to_run(id, access_token=token)``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson


def flatten_scopes(scopes: Any) -> list[str]:
    if isinstance(scopes, str):
        return [scopes]
    if isinstance(scopes, list | tuple):
        return [str(s) for s in scopes]
    if not isinstance(scopes, dict):
        raise TypeError("scopes must be a list of 'action:resource[:id]' strings or a dict")
    flat: list[str] = []
    for action, resources in scopes.items():
        if not isinstance(resources, dict):
            raise TypeError(f"scopes[{action!r}] must map resource types to ids")
        for resource, ids in resources.items():
            if ids is True:
                flat.append(f"{action}:{resource}")
            else:
                for ident in [ids] if isinstance(ids, str) else ids:
                    flat.append(f"{action}:{resource}:{ident}")
    return flat


def _expiration(value: Any) -> Any:
    if isinstance(value, dt.timedelta):
        return f"{max(1, round(value.total_seconds()))}s"
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.astimezone()).isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{max(1, round(value))}s"
    return value


class Auth:
    async def create_public_token(self, *, scopes: Any, expiration_time: Any = "15m") -> str:
        """A JWT granting ``scopes`` until ``expiration_time`` (``"15m"``, ``"1h"``, seconds,
        ``timedelta`` or ``datetime``; at most 30 days)."""
        from worker.sdk import client

        body = {"scopes": flatten_scopes(scopes), "expirationTime": _expiration(expiration_time)}
        response = await client.request(
            "POST", "/api/v1/auth/public-tokens", content=orjson.dumps(body)
        )
        return str(response.json()["token"])


auth = Auth()
