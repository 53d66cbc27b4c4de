"""Public access tokens: short-lived HS256 JWTs a browser can use instead of the secret key.

Claims follow Trigger.dev (docs/triggerdev-semantics.md, "Public access tokens"): ``{sub:
<environment id>, pub: true, scopes: [...], iat, exp, iss, aud}``. Scopes are flat strings
``action:resource[:id]``: ``read:runs`` (every run), ``read:runs:<run id>``, ``read:tags:<tag>``,
``read:batch:<batch id>``, ``read:tasks:<task id>``, ``write:waitpoints:<token id>``,
``trigger:tasks:<task id>`` (may trigger that task: ``auth.create_trigger_public_token``). A token
created with ``oneTimeUse`` carries ``otu: true`` and a ``jti``; triggering with it spends the
``jti`` (a second trigger is refused), as Trigger.dev's trigger tokens are single-use by default.

Signing secret: tokens this server makes (``POST /api/v1/auth/public-tokens``, the
``x-trigger-jwt`` of a trigger) are signed with a random 32-byte secret per environment kept
server-side (``environment_secrets``), created on first use and cached per process. Trigger.dev's
SDK signs tokens itself with the secret key (``auth.createPublicToken``): those verify against
the environment's secret keys, which the server keeps encrypted with its encryption key
(worker/engine/secret_box.py) beside their hashes. Neither secrets nor tokens are logged.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from worker.engine import secret_box
from worker.engine.db import Pool, Row, fetch_all, fetch_one
from worker.engine.errors import EngineError, Forbidden
from worker.engine.keys import MAX_EXPIRY_SECONDS, Environment
from worker.engine.models import parse_duration
from worker.engine.queries import Q

ISSUER = "https://id.trigger.dev"
AUDIENCE = "https://api.trigger.dev"
DEFAULT_EXPIRY_SECONDS = 15 * 60
_SCOPE = re.compile(r"^(read|write|trigger|batchTrigger):[A-Za-z]+(:.+)?$")
_HEADER = {"alg": "HS256", "typ": "JWT"}


class InvalidToken(Exception):
    """The token is malformed, forged or expired (the API answers 401)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(claims: dict[str, Any], secret: bytes) -> str:
    signing_input = _b64(orjson.dumps(_HEADER)) + "." + _b64(orjson.dumps(claims))
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def unverified_claims(token: str) -> dict[str, Any]:
    """The claims, NOT verified: only to find which environment's secret to verify with."""
    try:
        _, payload, _ = token.split(".")
        claims = orjson.loads(_unb64(payload))
    except Exception:
        raise InvalidToken("malformed public access token") from None
    if not isinstance(claims, dict):
        raise InvalidToken("malformed public access token")
    return claims


def decode(token: str, secret: bytes, now: float | None = None) -> dict[str, Any]:
    """Verify signature, algorithm and expiry; return the claims."""
    try:
        header_b64, payload_b64, signature_b64 = token.split(".")
        header = orjson.loads(_unb64(header_b64))
        signature = _unb64(signature_b64)
    except Exception:
        raise InvalidToken("malformed public access token") from None
    if not isinstance(header, dict) or header.get("alg") != "HS256":
        raise InvalidToken("public access tokens must be HS256 JWTs")
    expected = hmac.new(secret, f"{header_b64}.{payload_b64}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidToken("public access token signature is invalid")
    claims = unverified_claims(token)
    exp = claims.get("exp")
    if not isinstance(exp, int | float) or exp <= (now if now is not None else time.time()):
        raise InvalidToken("public access token has expired; ask the server for a new one")
    if claims.get("aud") != AUDIENCE or claims.get("pub") is not True:
        raise InvalidToken("not a public access token")
    return claims


def looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


def expiry_seconds(value: Any) -> float:
    """``"15m"``, ``"1h"``, a number of seconds, or an ISO datetime; default 15 minutes."""
    if value is None:
        return DEFAULT_EXPIRY_SECONDS
    try:
        if isinstance(value, str) and not re.match(r"^\d+(\.\d+)?(ms|s|m|h|d|w)$", value):
            seconds = datetime.fromisoformat(value).timestamp() - time.time()
        else:
            seconds = parse_duration(value, "expirationTime").total_seconds()
    except (ValueError, OverflowError) as exc:
        raise EngineError(
            f"expirationTime {value!r} is not a duration ('15m', '1h', seconds) or an ISO "
            f"datetime with offset: {exc}"
        ) from None
    if not 0 < seconds <= MAX_EXPIRY_SECONDS:
        raise EngineError("expirationTime must be in the future and at most 30 days away")
    return seconds


def check_scopes(scopes: Any) -> list[str]:
    if not isinstance(scopes, list) or not scopes:
        raise EngineError("scopes must be a non-empty list like ['read:runs:run_123']")
    for scope in scopes:
        if not isinstance(scope, str) or not _SCOPE.match(scope):
            raise EngineError(
                f"scope {scope!r} is not 'action:resource[:id]' (e.g. 'read:runs:run_1', "
                "'read:tags:user_1', 'read:batch:batch_1', 'write:waitpoints:waitpoint_1')"
            )
    return list(scopes)


# --- the signing secret ---------------------------------------------------------------------

_secrets: dict[str, tuple[bytes, Environment]] = {}
_keys: dict[str, tuple[float, list[bytes]]] = {}
#: the previous signing secret after a rotation (None: there is none), per environment
_previous: dict[str, bytes | None] = {}


def forget_environment(environment_id: str | None) -> None:
    """Drop what this process cached of an environment's secrets (None: of every one); the
    API's key cache calls this on the ``trigger_keys`` notification of a rotation."""
    for cache in (_secrets, _previous, _keys):
        if environment_id is None:
            cache.clear()
        else:
            cache.pop(environment_id, None)


async def _previous_secret(pool: Pool, environment_id: str) -> bytes | None:
    if environment_id not in _previous:
        async with pool.connection() as conn:
            row = await fetch_one(conn, Q.previous_env_secret, {"environment_id": environment_id})
        _previous[environment_id] = bytes(row["previous_secret"]) if row else None
    return _previous[environment_id]


async def _secret(pool: Pool, environment_id: str) -> tuple[bytes, Environment] | None:
    hit = _secrets.get(environment_id)
    if hit:
        return hit
    async with pool.connection() as conn:
        params = {"environment_id": environment_id, "jwt_secret": secrets.token_bytes(32)}
        row = await fetch_one(conn, Q.get_env_secret, params)
        if row is None:
            await conn.execute(Q.ensure_env_secret, params)
            row = await fetch_one(conn, Q.get_env_secret, params)
        await conn.commit()
    if row is None:
        return None
    env = Environment.from_row(row)
    _secrets[environment_id] = (bytes(row["jwt_secret"]), env)
    return _secrets[environment_id]


def _claims(environment_id: str, scopes: list[str], seconds: float) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": environment_id, "pub": True, "scopes": scopes, "iat": now,
            "exp": now + int(seconds), "iss": ISSUER, "aud": AUDIENCE}


async def create_token(
    pool: Pool, env: Environment, scopes: Any, expiration: Any = None, one_time: bool = False
) -> dict[str, Any]:
    claims = _claims(env.id, check_scopes(scopes), expiry_seconds(expiration))
    if one_time:
        claims.update(otu=True, jti=secrets.token_urlsafe(16))
    found = await _secret(pool, env.id)
    assert found is not None
    return {"token": encode(claims, found[0]), "claims": claims}


#: lifetime of the token returned with each trigger (header x-trigger-jwt): 1 h
RUN_TOKEN_SECONDS = 3600


async def run_token(pool: Pool, env: Environment, run_id: str) -> str:
    """A token that reads one run (``read:runs:<id>``), as Trigger.dev returns on trigger:
    :func:`create_token`'s, without checking a scope and parsing a duration at every trigger."""
    found = await _secret(pool, env.id)
    assert found is not None
    return encode(_claims(env.id, [f"read:runs:{run_id}"], RUN_TOKEN_SECONDS), found[0])


@dataclass(frozen=True)
class Principal:
    """Who is asking: an environment, and the scopes of a public token (None = secret key)."""

    env: Environment
    scopes: frozenset[str] | None = None
    #: a one-time-use token's id (``jti``) and expiry (epoch seconds); None otherwise
    one_time_id: str | None = None
    expires_at: float = 0.0

    def allows(self, *scopes: str) -> bool:
        """True for a secret key, or when the token holds any of ``scopes``."""
        return self.scopes is None or any(s in self.scopes for s in scopes)

    def can_read_run(self, run: Row) -> bool:
        wanted = ["read:runs", f"read:runs:{run['id']}", f"read:tasks:{run['task_id']}"]
        wanted += [f"read:tags:{tag}" for tag in run.get("tags") or []]
        if run.get("batch_id"):
            wanted.append(f"read:batch:{run['batch_id']}")
        return self.allows(*wanted)

    def require(self, *scopes: str) -> None:
        if not self.allows(*scopes):
            raise Forbidden(
                f"this public access token does not grant {' or '.join(scopes)}; "
                "create one with that scope"
            )


#: decrypted secret keys per environment, for this long (a revoked key stops verifying then)
KEY_CACHE_SECONDS = 30.0


async def _env_keys(pool: Pool, environment_id: str) -> list[bytes]:
    """The environment's secret keys (decrypted), which Trigger.dev's SDK signs tokens with."""
    hit = _keys.get(environment_id)
    if hit and hit[0] > time.monotonic():
        return hit[1]
    async with pool.connection() as conn:
        rows = await fetch_all(conn, Q.env_key_ciphertexts, {"environment_id": environment_id})
    keys = []
    for row in rows:
        try:
            context = b"api-key:" + bytes(row["key_hash"])
            keys.append(secret_box.open_sealed(bytes(row["key_ciphertext"]), context).encode())
        except Exception:  # another encryption key, or no key configured: cannot verify
            continue
    _keys[environment_id] = (time.monotonic() + KEY_CACHE_SECONDS, keys)
    return keys


async def verify(pool: Pool, token: str) -> Principal:
    """A token we signed (environment secret) or one a client signed with a secret key of the
    environment (``auth.createPublicToken`` in Trigger.dev's SDK)."""
    claims = unverified_claims(token)
    env_id = claims.get("sub")
    if not isinstance(env_id, str):
        raise InvalidToken("malformed public access token")
    try:
        found = await _secret(pool, env_id)
    except Exception:  # a sub that is not a uuid, ...
        raise InvalidToken("public access token names no known environment") from None
    if found is None:
        raise InvalidToken("public access token names no known environment")
    try:
        claims = decode(token, found[0])
    except InvalidToken as exc:
        if "signature" not in str(exc):
            raise
        previous = await _previous_secret(pool, env_id)
        candidates = ([previous] if previous else []) + await _env_keys(pool, env_id)
        for key in candidates:
            with contextlib.suppress(InvalidToken):
                claims = decode(token, key)
                break
        else:
            raise
    one_time = str(claims["jti"]) if claims.get("otu") and claims.get("jti") else None
    return Principal(found[1], frozenset(claims.get("scopes") or []), one_time,
                     float(claims["exp"]))


async def spend(pool: Pool, who: Principal) -> None:
    """Spend a one-time token (no-op for others); refuse one that was already used."""
    if who.one_time_id is None:
        return
    params = {"token_id": who.one_time_id, "environment_id": who.env.id,
              "expires_at": datetime.fromtimestamp(who.expires_at, UTC)}
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.spend_public_token, params)
        await conn.execute(Q.forget_spent_public_tokens, {"environment_id": who.env.id})
        await conn.commit()
    if row is None:
        raise InvalidToken("this one-time public token was already used; create a new one")
