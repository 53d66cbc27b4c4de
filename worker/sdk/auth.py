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

import contextvars
import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from worker.sdk import transport
from worker.sdk.transport import AuthOverride, auth_override


def flatten_scopes(scopes: object) -> list[str]:
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


def _expiration(value: object) -> object:
    if isinstance(value, dt.timedelta):
        return f"{max(1, round(value.total_seconds()))}s"
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.astimezone()).isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{max(1, round(value))}s"
    return value


class Auth:
    async def create_public_token(self, *, scopes: object, expiration_time: object = "15m") -> str:
        """A JWT granting ``scopes`` until ``expiration_time`` (``"15m"``, ``"1h"``, seconds,
        ``timedelta`` or ``datetime``; at most 30 days)."""
        body = {"scopes": flatten_scopes(scopes), "expirationTime": _expiration(expiration_time)}
        response = await transport.request(
            "POST", "/api/v1/auth/public-tokens", json=body
        )
        return str(response.json()["token"])

    async def create_trigger_public_token(
        self, task: object, *, multiple_use: bool = False, expiration_time: object = "15m"
    ) -> str:
        """A token that may trigger ``task`` (a task id or task object, or a list of them) and
        nothing else; single-use unless ``multiple_use=True`` (as in Trigger.dev). A browser
        triggers with it through ``auth.with_auth(access_token=token)``."""
        return await self._task_token("trigger", task, multiple_use, expiration_time)

    async def _task_token(self, action: str, task: object, multiple_use: bool,
                          expiration_time: object) -> str:
        targets = task if isinstance(task, list | tuple) else [task]
        ids = [getattr(t, "id", t) for t in targets]
        if not ids or not all(isinstance(i, str) and i for i in ids):
            raise TypeError("a task token needs a task id or task object (or a list of them)")
        body = {"scopes": [f"{action}:tasks:{i}" for i in ids],
                "expirationTime": _expiration(expiration_time), "oneTimeUse": not multiple_use}
        response = await transport.request(
            "POST", "/api/v1/auth/public-tokens", json=body
        )
        return str(response.json()["token"])

    async def create_batch_trigger_public_token(
        self, task: object, *, multiple_use: bool = False, expiration_time: object = "15m"
    ) -> str:
        """Like :meth:`create_trigger_public_token`, for batch triggers of ``task``."""
        return await self._task_token("batchTrigger", task, multiple_use, expiration_time)

    def with_auth(
        self,
        config: Mapping[str, str] | Callable[[], object] | None = None,
        fn: Callable[[], object] | None = None,
        /,
        *,
        access_token: str | None = None,
        base_url: str | None = None,
    ) -> Any:
        """Use other credentials for the SDK calls made inside:
        ``async with auth.with_auth(access_token=token): await tasks.trigger(...)`` or, as in
        Trigger.dev, ``await auth.with_auth({"access_token": token}, fn)``."""
        if isinstance(config, Mapping):
            access_token = config.get("access_token", access_token)
            base_url = config.get("base_url", base_url)
        elif callable(config) and fn is None:
            fn = config
        scope = _WithAuth(access_token, base_url)
        return scope if fn is None else scope.call(fn)


class _WithAuth:
    def __init__(self, access_token: str | None, base_url: str | None) -> None:

        self.override = AuthOverride(access_token, base_url)
        self.tokens: list[contextvars.Token[AuthOverride | None]] = []

    def __enter__(self) -> None:

        self.tokens.append(auth_override.set(self.override))

    def __exit__(self, *exc: object) -> None:

        auth_override.reset(self.tokens.pop())

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc: object) -> None:
        self.__exit__()

    async def call(self, fn: Callable[[], object]) -> Any:
        with self:
            result = fn()
            if hasattr(result, "__await__"):
                result = await result
            return result


auth = Auth()
