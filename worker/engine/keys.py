"""Projects, environments and their secret keys: looked up by SHA-256 digest; also kept
encrypted with the server's encryption key when one is set (worker/engine/secret_box.py), so
public access tokens that Trigger.dev's SDK signs with the key can be verified."""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass

import psycopg

from worker.engine import secret_box
from worker.engine.queries import Q

ENV_TYPES = {"dev": "DEVELOPMENT", "staging": "STAGING", "prod": "PRODUCTION"}
_ALNUM = string.ascii_letters + string.digits


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


def check_key_format(slug: str, key: str) -> None:
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
