"""Bearer-key authentication. Keys are looked up by their SHA-256 digest, never stored plain.

Resolved keys are cached in-process for a short time so the hot path (dequeue, complete)
does not pay a database round trip per request; a revoked key stops working within the TTL.
"""

from __future__ import annotations

import time

from fastapi import Request

from worker.engine.keys import Environment, hash_key
from worker.engine.queries import Q

CACHE_SECONDS = 30.0
_MISSING = (
    "missing API key: send 'Authorization: Bearer <secret key>' (a tr_dev_… or tr_prod_… key; "
    "set TRIGGER_SECRET_KEY for the SDK)"
)


class AuthError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


async def authenticate(request: Request) -> Environment:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise AuthError(_MISSING)
    digest = hash_key(key.strip())
    cache: dict[bytes, tuple[float, Environment]] = request.app.state.key_cache
    hit = cache.get(digest)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    async with request.app.state.pool.connection() as conn:
        row = await (await conn.execute(Q.find_key, {"key_hash": digest})).fetchone()
    if row is None:
        raise AuthError("invalid API key: it is unknown or revoked; check TRIGGER_SECRET_KEY")
    env = Environment(
        id=str(row["environment_id"]),
        slug=row["slug"],
        type=row["type"],
        concurrency_limit=row["concurrency_limit"],
        project_id=str(row["project_id"]),
        project_ref=row["project_ref"],
    )
    cache[digest] = (time.monotonic() + CACHE_SECONDS, env)
    return env
