"""Bearer-key authentication. Keys are looked up by their SHA-256 digest, never stored plain.

Two kinds of key (docs/api.md, "Keys"): a secret key opens the environment's whole API; a
worker token (``tr_wkr_…``) opens only the worker protocol (register, dequeue, heartbeat,
complete, release, logs). In production environments the worker protocol takes worker tokens
only; a development environment's secret key still opens it (``trigger dev`` convenience).

Resolved keys are cached per process so the hot path (dequeue, complete) does not pay a database
round trip per request. The cache listens on Postgres channel ``trigger_keys``: a revoked,
rotated or deleted key is dropped by every API process as soon as the notification arrives
(milliseconds, through the engine's notifier); while that listening connection is down, the
cache is not used at all.

Failed authentications are throttled per client address (``TRIGGER_AUTH_FAILURES_PER_MINUTE``,
default 60, per process; ``worker.api.settings``): past the limit, a key this process has not
already verified is answered 429 without a lookup until the minute is over.
"""

from __future__ import annotations

import contextlib
import time

from fastapi import Request

from worker.api.state import api_state
from worker.engine import keys, public_tokens
from worker.engine.keys import Environment, KeyKind, ResolvedKey, hash_key
from worker.engine.notifier import Listener

CACHE_SECONDS = 30.0
CHANNEL = "trigger_keys"
_MISSING = (
    "missing API key: send 'Authorization: Bearer <secret key>' (a tr_dev_… or tr_prod_… key; "
    "set TRIGGER_SECRET_KEY for the SDK)"
)


class AuthError(Exception):
    """401: no key, or one that is unknown, revoked or expired."""

    status = 401

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {"WWW-Authenticate": "Bearer"}


class WrongKeyKind(AuthError):
    """403: a valid key of the wrong kind for this endpoint."""

    status = 403


class Throttled(AuthError):
    """429: too many failed authentications from this address."""

    status = 429


class KeyCache:
    """Resolved keys of this process, dropped on the ``trigger_keys`` notifications (the
    engine's notifier delivers them: :meth:`listener`)."""

    def __init__(self) -> None:
        self._entries: dict[bytes, tuple[float, ResolvedKey]] = {}
        self.listening = False

    def listener(self) -> Listener:
        return Listener(on_note=self.drop, on_up=self._up, on_down=self._down)

    def get(self, digest: bytes) -> ResolvedKey | None:
        hit = self._entries.get(digest)
        if hit is None or not self.listening:
            return None
        if hit[0] <= time.monotonic():
            self._entries.pop(digest, None)
            return None
        return hit[1]

    def put(self, digest: bytes, resolved: ResolvedKey) -> None:
        ttl = CACHE_SECONDS
        if resolved.expires_at is not None:
            ttl = min(CACHE_SECONDS, resolved.expires_at.timestamp() - time.time())
        self._entries[digest] = (time.monotonic() + ttl, resolved)

    def drop(self, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "key":
            digest, _, env_id = value.partition(":")
            with contextlib.suppress(ValueError):
                self._entries.pop(bytes.fromhex(digest), None)
            public_tokens.forget_environment(env_id)  # its keys verify client-signed tokens
        elif kind == "env":  # signing secret rotated: re-read it, and the env's keys
            public_tokens.forget_environment(value)

    def _up(self) -> None:
        # anything revoked while we were not listening: forget everything
        self._entries.clear()
        public_tokens.forget_environment(None)
        self.listening = True

    def _down(self) -> None:
        self.listening = False


class FailureThrottle:
    """Failed authentications per client address, in fixed one-minute windows."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._windows: dict[str, tuple[float, int]] = {}

    def _window(self, address: str) -> tuple[float, int]:
        start, count = self._windows.get(address, (0.0, 0))
        now = time.monotonic()
        if now - start >= 60:
            return now, 0
        return start, count

    def check(self, address: str) -> None:
        start, count = self._window(address)
        if count >= self.limit:
            retry = max(1, int(60 - (time.monotonic() - start)) + 1)
            raise Throttled(
                f"too many failed authentications from {address}: retry in {retry} s",
                headers={"Retry-After": str(retry)},
            )

    def failed(self, address: str) -> None:
        start, count = self._window(address)
        if len(self._windows) > 100_000:  # bounded memory under a spray of addresses
            self._windows.clear()
        self._windows[address] = (start, count + 1)


async def _resolve(request: Request) -> ResolvedKey:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError(_MISSING)
    digest = hash_key(key.strip())
    state = api_state(request)
    hit = state.key_cache.get(digest)
    if hit is not None:
        return hit
    address = request.client.host if request.client else "unknown"
    state.auth_throttle.check(address)
    resolved = await keys.resolve_key(state.engine.pool, digest)
    if resolved is None:
        state.auth_throttle.failed(address)
        raise AuthError("invalid API key: it is unknown, revoked or expired; check "
                        "TRIGGER_SECRET_KEY (or TRIGGER_WORKER_TOKEN for a worker)")
    state.key_cache.put(digest, resolved)
    return resolved


async def authenticate(request: Request) -> Environment:
    """A secret key: the environment's whole API."""
    resolved = await _resolve(request)
    if resolved.kind is not KeyKind.secret:
        raise WrongKeyKind(
            "a worker token only opens the worker protocol (/engine/v1/worker/...); "
            "use the environment's secret key here"
        )
    return resolved.env


async def authenticate_worker(request: Request) -> Environment:
    """The worker protocol: a worker token, or (development only) the secret key."""
    resolved = await _resolve(request)
    if resolved.kind is KeyKind.secret and resolved.env.type != "DEVELOPMENT":
        raise WrongKeyKind(
            f"the {resolved.env.slug} environment's worker protocol needs a worker token, not "
            "the secret key: create one with `trigger keys create --type worker` (or POST "
            "/api/v1/keys) and give it to workers as TRIGGER_WORKER_TOKEN"
        )
    return resolved.env
