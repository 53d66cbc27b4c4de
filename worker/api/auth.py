"""Bearer-key authentication. Keys are looked up by their SHA-256 digest, never stored plain.

Two kinds of key (docs/api.md, "Keys"): a secret key opens the environment's whole API; a
worker token (``tr_wkr_…``) opens only the worker protocol (register, dequeue, heartbeat,
complete, release, logs). In production environments the worker protocol takes worker tokens
only; a development environment's secret key still opens it (``trigger dev`` convenience).

Resolved keys are cached per process so the hot path (dequeue, complete) does not pay a database
round trip per request. The cache listens on Postgres channel ``trigger_keys``: a revoked,
rotated or deleted key is dropped by every API process as soon as the notification arrives
(milliseconds); while that listening connection is down, the cache is not used at all.

Failed authentications are throttled per client address (``TRIGGER_AUTH_FAILURES_PER_MINUTE``,
default 60, per process): past the limit, a key this process has not already verified is
answered 429 without a lookup until the minute is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass

import psycopg
from fastapi import Request

from worker.engine import public_tokens
from worker.engine.keys import Environment, hash_key
from worker.engine.queries import Q

log = logging.getLogger(__name__)
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


@dataclass(frozen=True)
class Resolved:
    env: Environment
    kind: str  # "secret" | "worker"


class KeyCache:
    """Resolved keys of this process, dropped on the ``trigger_keys`` notifications."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._entries: dict[bytes, tuple[float, Resolved]] = {}
        self.listening = False
        self._task: asyncio.Task[None] | None = None

    def get(self, digest: bytes) -> Resolved | None:
        hit = self._entries.get(digest)
        if hit is None or not self.listening:
            return None
        if hit[0] <= time.monotonic():
            self._entries.pop(digest, None)
            return None
        return hit[1]

    def put(self, digest: bytes, resolved: Resolved, expires_in: float | None) -> None:
        ttl = CACHE_SECONDS if expires_in is None else min(CACHE_SECONDS, expires_in)
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

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen_forever(), name="key-cache")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _listen_forever(self) -> None:
        while True:
            try:
                connect = psycopg.AsyncConnection.connect
                async with await connect(self._url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # anything revoked while we were not listening: forget everything
                    self._entries.clear()
                    public_tokens.forget_environment(None)
                    self.listening = True
                    async for note in conn.notifies():
                        self.drop(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key cache: LISTEN connection lost (%s); reconnecting in 1 s", exc)
            finally:
                self.listening = False
            await asyncio.sleep(1)


class FailureThrottle:
    """Failed authentications per client address, in fixed one-minute windows."""

    def __init__(self, limit: int | None = None) -> None:
        raw = os.environ.get("TRIGGER_AUTH_FAILURES_PER_MINUTE", "")
        self.limit = limit if limit is not None else int(raw) if raw.strip() else 60
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


async def _resolve(request: Request) -> Resolved:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError(_MISSING)
    digest = hash_key(key.strip())
    state = request.app.state
    cache: KeyCache = state.key_cache
    hit = cache.get(digest)
    if hit is not None:
        return hit
    throttle: FailureThrottle = state.auth_throttle
    address = request.client.host if request.client else "unknown"
    throttle.check(address)
    async with state.pool.connection() as conn:
        row = await (await conn.execute(Q.resolve_key, {"key_hash": digest})).fetchone()
        await conn.commit()
    if row is None:
        throttle.failed(address)
        raise AuthError("invalid API key: it is unknown, revoked or expired; check "
                        "TRIGGER_SECRET_KEY (or TRIGGER_WORKER_TOKEN for a worker)")
    env = Environment(
        id=str(row["environment_id"]),
        slug=row["slug"],
        type=row["type"],
        concurrency_limit=row["concurrency_limit"],
        project_id=str(row["project_id"]),
        project_ref=row["project_ref"],
    )
    resolved = Resolved(env, row["kind"])
    expires_in = None
    if row["expires_at"] is not None:
        expires_in = row["expires_at"].timestamp() - time.time()
    cache.put(digest, resolved, expires_in)
    return resolved


async def authenticate(request: Request) -> Environment:
    """A secret key: the environment's whole API."""
    resolved = await _resolve(request)
    if resolved.kind != "secret":
        raise WrongKeyKind(
            "a worker token only opens the worker protocol (/engine/v1/worker/...); "
            "use the environment's secret key here"
        )
    return resolved.env


async def authenticate_worker(request: Request) -> Environment:
    """The worker protocol: a worker token, or (development only) the secret key."""
    resolved = await _resolve(request)
    if resolved.kind == "secret" and resolved.env.type != "DEVELOPMENT":
        raise WrongKeyKind(
            f"the {resolved.env.slug} environment's worker protocol needs a worker token, not "
            "the secret key: create one with `trigger keys create --type worker` (or POST "
            "/api/v1/keys) and give it to workers as TRIGGER_WORKER_TOKEN"
        )
    return resolved.env
