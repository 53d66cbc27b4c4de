"""Who may use the dashboard: accounts with scrypt-hashed passwords, an admin password from the
environment, one-time login links (printed by `trigger dev`), and browser sessions.

Session and login tokens are random; only their SHA-256 digests are stored. Each session has its
own CSRF token, which every form and action must echo (docs/dashboard.md, "Access").
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass

import psycopg

from worker.engine.db import Pool, fetch_one
from worker.engine.queries import Q

SESSION_SECONDS = 7 * 24 * 3600
LOGIN_LINK_SECONDS = 24 * 3600
ADMIN_USER = "admin"
ADMIN_PASSWORD_ENV = "TRIGGER_DASHBOARD_PASSWORD"
DEV_USER = "dev"
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Session:
    username: str
    csrf_token: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def hash_password(password: str) -> str:
    """``scrypt$<salt>$<hash>`` (base64), with a fresh random salt."""
    salt = os.urandom(16)
    derived = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return "scrypt$" + base64.b64encode(salt).decode() + "$" + base64.b64encode(derived).decode()


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_b64, hash_b64 = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    derived = hashlib.scrypt(
        password.encode(), salt=base64.b64decode(salt_b64), dklen=32, **_SCRYPT
    )
    return hmac.compare_digest(derived, base64.b64decode(hash_b64))


def check_new_user(username: str, password: str) -> None:
    if not username or len(username) > 200 or not username.isprintable():
        raise ValueError("a username is 1 to 200 printable characters")
    if len(password) < 10:
        raise ValueError("a password has at least 10 characters")


def create_user(database_url: str, username: str, password: str) -> None:
    """Create the account, or set its password if it exists (``trigger users create``)."""
    check_new_user(username, password)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            Q.dash_upsert_user, {"username": username, "password_hash": hash_password(password)}
        )


def create_login_link(database_url: str, base_url: str, username: str = DEV_USER) -> str:
    """A one-time link that logs its opener in (``trigger dev`` prints it)."""
    token = secrets.token_urlsafe(32)
    with psycopg.connect(database_url) as conn:
        conn.execute(
            Q.dash_insert_login_token,
            {"token_hash": _digest(token), "username": username, "seconds": LOGIN_LINK_SECONDS},
        )
    return f"{base_url.rstrip('/')}/dashboard/login/link?token={token}"


async def verify_password(pool: Pool, username: str, password: str,
                          admin_password: str | None) -> bool:
    """``admin_password`` is TRIGGER_DASHBOARD_PASSWORD (``worker.api.settings``)."""
    if admin_password and username == ADMIN_USER:
        return hmac.compare_digest(password.encode(), admin_password.encode())
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.dash_get_user, {"username": username})
    if row is None:
        check_password(password, hash_password("timing"))  # same cost for unknown users
        return False
    return check_password(password, row["password_hash"])


async def spend_login_token(pool: Pool, token: str) -> str | None:
    """The username a one-time login token was made for, or None; the token is gone after."""
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.dash_spend_login_token, {"token_hash": _digest(token)})
    return row["username"] if row and row["valid"] else None


async def open_session(pool: Pool, username: str) -> str:
    """A new session; returns the cookie value."""
    token = secrets.token_urlsafe(32)
    params = {
        "token_hash": _digest(token),
        "username": username,
        "csrf_token": secrets.token_urlsafe(32),
        "seconds": SESSION_SECONDS,
    }
    async with pool.connection() as conn:
        await conn.execute(Q.dash_insert_session, params)
    return token


async def find_session(pool: Pool, token: str) -> Session | None:
    async with pool.connection() as conn:
        row = await fetch_one(conn, Q.dash_get_session, {"token_hash": _digest(token)})
    return Session(row["username"], row["csrf_token"]) if row else None


async def close_session(pool: Pool, token: str) -> None:
    async with pool.connection() as conn:
        await conn.execute(Q.dash_delete_session, {"token_hash": _digest(token)})


def same_token(given: str | None, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(str(given).encode(), expected.encode())
