"""Projects, environments and their secret keys: looked up by SHA-256 digest; also kept
encrypted with the server's encryption key when one is set (worker/engine/secret_box.py), so
public access tokens that Trigger.dev's SDK signs with the key can be verified."""

from __future__ import annotations

import hashlib
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import psycopg
from psycopg import AsyncConnection

from worker.engine import secret_box
from worker.engine.db import Conn, Pool, Row, fetch_all, fetch_one
from worker.engine.errors import Conflict, EngineError, NotFound
from worker.engine.queries import Q

ENV_TYPES = {"dev": "DEVELOPMENT", "staging": "STAGING", "prod": "PRODUCTION"}
_ALNUM = string.ascii_letters + string.digits

#: the longest lifetime of a public access token (worker/engine/public_tokens.py)
MAX_EXPIRY_SECONDS = 30 * 24 * 3600


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def seal_key(key: str, digest: bytes) -> bytes | None:
    """The key encrypted with the server's encryption key, or None when there is none
    (then only its hash is stored, and client-signed public tokens cannot be verified)."""
    if not secret_box.available():
        return None
    return secret_box.seal(key, b"api-key:" + digest)


def new_secret_key(slug: str) -> str:
    """``tr_<env>_`` + 24 alphanumerics, as Trigger.dev keys look."""
    short = {"dev": "dev", "staging": "stg", "prod": "prod"}[slug]
    return f"tr_{short}_" + "".join(secrets.choice(_ALNUM) for _ in range(24))


def new_worker_token() -> str:
    """``tr_wkr_`` + 32 alphanumerics: opens the worker protocol of one environment only."""
    return WORKER_PREFIX + "".join(secrets.choice(_ALNUM) for _ in range(32))


WORKER_PREFIX = "tr_wkr_"


def check_key_format(slug: str, key: str, kind: str = "secret") -> None:
    if kind == "worker":
        if not key.startswith(WORKER_PREFIX) or len(key) < 27 or not key.isascii():
            raise ValueError(f"a worker token must look like {WORKER_PREFIX}<at least 20 "
                             "letters or digits>")
        return
    prefix = {"dev": "tr_dev_", "staging": "tr_stg_", "prod": "tr_prod_"}[slug]
    if not key.startswith(prefix) or len(key) < len(prefix) + 20 or not key.isascii():
        raise ValueError(
            f"a {slug} secret key must look like {prefix}<at least 20 letters or digits>"
        )


@dataclass(frozen=True)
class Environment:
    """The environment a secret key belongs to; every API call acts inside one."""

    id: str
    slug: str
    type: str
    concurrency_limit: int
    project_id: str
    project_ref: str

    @classmethod
    def from_row(cls, row: Row) -> Environment:
        """From a row with ``environment_id, slug, type, concurrency_limit, project_id,
        project_ref`` (the environment queries all select these)."""
        return cls(
            id=str(row["environment_id"]),
            slug=row["slug"],
            type=row["type"],
            concurrency_limit=row["concurrency_limit"],
            project_id=str(row["project_id"]),
            project_ref=row["project_ref"],
        )


def create_project(url: str, ref: str, keys: dict[str, str] | None = None) -> dict[str, str]:
    """Ensure project ``ref`` with dev and prod environments; add a secret key to each.

    ``keys`` may give the keys to register (e.g. the dev key saved by ``trigger dev``); missing
    ones are generated. Returns ``{slug: plaintext key}`` — the only time a key is visible.
    """
    keys = dict(keys or {})
    for slug, key in keys.items():
        check_key_format(slug, key)
    with psycopg.connect(url) as conn:
        project = conn.execute(Q.upsert_project, {"ref": ref, "name": ref}).fetchone()
        assert project is not None
        for slug in ("dev", "prod"):
            env = conn.execute(
                Q.upsert_environment,
                {"project_id": project[0], "slug": slug, "type": ENV_TYPES[slug]},
            ).fetchone()
            assert env is not None
            env_id = env[0]
            key = keys.setdefault(slug, new_secret_key(slug))
            digest = hash_key(key)
            conn.execute(
                Q.insert_key,
                {
                    "key_hash": digest,
                    "environment_id": env_id,
                    "key_prefix": key[:11],
                    "key_ciphertext": seal_key(key, digest),
                },
            )
    return keys


# --- managing keys (API /api/v1/keys, `trigger keys`) ----------------------------------------

KINDS = ("secret", "worker")
#: how long a rotated key keeps working unless told otherwise
DEFAULT_GRACE_SECONDS = 24 * 3600
MAX_GRACE_SECONDS = 30 * 24 * 3600


@dataclass(frozen=True)
class ApiKey:
    """A key as listed: never the key itself, only its first characters."""

    id: str
    name: str
    kind: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> ApiKey:
        return cls(str(row["id"]), row["name"], row["kind"], row["key_prefix"],
                   row["created_at"], row["last_used_at"], row["expires_at"], row["revoked_at"])

    @property
    def status(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "expired" if self.expires_at <= datetime.now(UTC) else "expiring"
        return "active"


@dataclass(frozen=True)
class CreatedKey:
    """A new key: ``plaintext`` is shown this once and never stored."""

    key: ApiKey
    plaintext: str


@dataclass(frozen=True)
class RotatedKey:
    created: CreatedKey
    previous: ApiKey




def _key_id(key_id: str) -> str:
    try:
        return str(uuid.UUID(key_id))
    except ValueError:
        raise NotFound(f"no key {key_id!r} in this environment (ids are UUIDs)") from None


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= 100:
        raise EngineError("name must be a string of 1 to 100 characters")
    return name.strip()


async def environment_id(conn: Conn, project_ref: str, slug: str) -> str:
    row = await fetch_one(conn, Q.env_by_ref, {"project_ref": project_ref, "slug": slug})
    if row is None:
        raise NotFound(f"no environment {slug!r} in project {project_ref!r} "
                       "(trigger project create makes one)")
    return str(row["id"])


async def create_key(conn: Conn, env: Environment | str, name: str = "default",
                     kind: str = "secret", given: str | None = None,
                     expires_at: datetime | None = None) -> CreatedKey:
    """A new secret key or worker token for the environment (``given``: register that key,
    idempotently, e.g. a worker token from a deployment's Secret)."""
    if kind not in KINDS:
        raise EngineError(f"type must be one of {', '.join(KINDS)}, got {kind!r}")
    name = check_name(name)
    env_id = env.id if isinstance(env, Environment) else env
    slug = env.slug if isinstance(env, Environment) else await _slug(conn, env_id)
    if given is not None:
        try:
            check_key_format(slug, given, kind)
        except ValueError as exc:
            raise EngineError(str(exc)) from None
    plaintext = given or (new_worker_token() if kind == "worker" else new_secret_key(slug))
    digest = hash_key(plaintext)
    row = await fetch_one(
        conn,
        Q.create_api_key,
        {
            "key_hash": digest,
            "environment_id": env_id,
            "key_prefix": plaintext[:11],
            "key_ciphertext": seal_key(plaintext, digest) if kind == "secret" else None,
            "name": name,
            "kind": kind,
            "expires_at": expires_at,
        },
    )
    if row is None:  # the same key is registered elsewhere, or as another kind
        raise Conflict("this key is already registered for another environment or kind")
    return CreatedKey(ApiKey.from_row(row), plaintext)


async def _slug(conn: Conn, env_id: str) -> str:
    row = await fetch_one(conn, Q.environment_slug, {"environment_id": env_id})
    if row is None:
        raise NotFound(f"no environment {env_id}")
    return str(row["slug"])


async def list_keys(conn: Conn, env_id: str, include_revoked: bool = False) -> list[ApiKey]:
    params = {"environment_id": env_id, "include_revoked": include_revoked}
    return [ApiKey.from_row(row) for row in await fetch_all(conn, Q.list_api_keys, params)]


async def _locked(conn: Conn, env_id: str, key_id: str) -> ApiKey:
    row = await fetch_one(conn, Q.get_api_key, {"environment_id": env_id, "id": _key_id(key_id)})
    if row is None:
        raise NotFound(f"no key {key_id} in this environment")
    return ApiKey.from_row(row)


async def revoke_key(conn: Conn, env_id: str, key_id: str) -> ApiKey:
    """Revoke at once (every API process drops it from its cache on the NOTIFY the update
    fires). The environment's last live secret key cannot be revoked: rotate it instead."""
    key = await _locked(conn, env_id, key_id)
    if key.status in ("revoked", "expired"):
        raise Conflict(f"key {key.id} is already {key.status}")
    if key.kind == "secret":
        params = {"environment_id": env_id, "id": key.id}
        row = await fetch_one(conn, Q.other_live_secret_keys, params)
        if row is None or row["n"] == 0:
            raise Conflict("this is the environment's last live secret key: create or rotate "
                           "to a new one before revoking it")
    row = await fetch_one(conn, Q.revoke_api_key, {"environment_id": env_id, "id": key.id})
    assert row is not None
    return ApiKey.from_row(row)


async def rotate_key(conn: Conn, env_id: str, key_id: str,
                     grace_seconds: float = DEFAULT_GRACE_SECONDS) -> RotatedKey:
    """A new key of the same name and kind; the old one keeps working ``grace_seconds``."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise EngineError("gracePeriod must be between 0 seconds and 30 days")
    old = await _locked(conn, env_id, key_id)
    if old.status in ("revoked", "expired"):
        raise Conflict(f"key {old.id} is already {old.status}: create a new key instead")
    created = await create_key(conn, env_id, old.name, old.kind)
    until = datetime.now(UTC) + timedelta(seconds=grace_seconds)
    row = await fetch_one(
        conn,
        Q.expire_api_key,
        {"environment_id": env_id, "id": old.id, "expires_at": until},
    )
    assert row is not None
    return RotatedKey(created, ApiKey.from_row(row))


@dataclass(frozen=True)
class SecretRotation:
    rotated_at: datetime
    previous_valid_until: datetime


async def rotate_signing_secret(conn: Conn, env_id: str) -> SecretRotation:
    """A new public-token signing secret; tokens signed with the previous one verify until
    they expire (at most the longest token lifetime). One previous secret is kept: rotating
    again drops the one before."""
    params = {"environment_id": env_id, "jwt_secret": secrets.token_bytes(32),
              "grace_seconds": float(MAX_EXPIRY_SECONDS)}
    await conn.execute(Q.ensure_env_secret, {"environment_id": env_id,
                                             "jwt_secret": secrets.token_bytes(32)})
    row = await fetch_one(conn, Q.rotate_env_secret, params)
    assert row is not None
    return SecretRotation(row["rotated_at"], row["previous_valid_until"])


def create_worker_token(url: str, project_ref: str, slug: str, name: str = "workers",
                        given: str | None = None) -> str:
    """A worker token for environment ``slug`` of ``project_ref`` (for scripts and tests;
    not for use inside a running event loop)."""
    import asyncio

    from psycopg.rows import dict_row

    async def run() -> str:
        async with await AsyncConnection.connect(url, row_factory=dict_row) as conn:
            env_id = await environment_id(conn, project_ref, slug)
            created = await create_key(conn, env_id, name, "worker", given=given)
            await conn.commit()
            return created.plaintext

    return asyncio.run(run())


class KeyKind(StrEnum):
    secret = "secret"  # the environment's whole API
    worker = "worker"  # the worker protocol only


@dataclass(frozen=True)
class ResolvedKey:
    """A live key: its environment, its kind, and when it stops being valid."""

    env: Environment
    kind: KeyKind
    expires_at: datetime | None

    @classmethod
    def from_row(cls, row: Row) -> ResolvedKey:
        return cls(Environment.from_row(row), KeyKind(row["kind"]), row["expires_at"])


async def resolve_key(pool: Pool, digest: bytes) -> ResolvedKey | None:
    """The live key with this SHA-256 digest (marking it used), or None."""
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.resolve_key, {"key_hash": digest})
        await conn.commit()
    return None if row is None else ResolvedKey.from_row(row)
