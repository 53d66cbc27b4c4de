"""Encryption at rest for secrets the server must read back: secret keys (to verify public
access tokens a client signed with its key) and environment variables.

AES-256-GCM with the server's encryption key, ``TRIGGER_ENCRYPTION_KEY`` (64 hex characters or
urlsafe base64 of 32 bytes). ``trigger dev`` generates one and keeps it in
``.trigger/encryption.key``; in production the operator sets it (and keeps it out of the
database: a dump alone then reveals no key). Without it, secret keys are stored as hashes only
and client-signed tokens and environment variables are unavailable (errors say so).
"""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from worker.common.settings import SettingsError, env_str

ENV_VAR = "TRIGGER_ENCRYPTION_KEY"
_NONCE = 12


class EncryptionUnavailable(Exception):
    """No server encryption key is configured."""


def new_key() -> str:
    return secrets.token_hex(32)


def _key(environ: Mapping[str, str] | None = None) -> bytes:
    # Read at use, not cached: the CLI, the tests and the API share this module, and
    # ``trigger dev`` sets the key after import (check_configured_key checks it at API start).
    raw = env_str(ENV_VAR, environ=environ)
    if not raw:
        raise EncryptionUnavailable(
            f"{ENV_VAR} is not set: the server needs an encryption key (32 bytes, hex) to keep "
            "secrets it must read back; `trigger dev` makes one, operators set it in production"
        )
    try:
        key = bytes.fromhex(raw) if len(raw) == 64 else base64.urlsafe_b64decode(raw + "==")
    except (ValueError, binascii.Error):
        raise EncryptionUnavailable(f"{ENV_VAR} must be 32 bytes as hex or base64") from None
    if len(key) != 32:
        raise EncryptionUnavailable(f"{ENV_VAR} must be 32 bytes as hex or base64")
    return key


def check_configured_key(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`SettingsError` if the key is set but unusable (unset is allowed)."""
    if env_str(ENV_VAR, environ=environ) is None:
        return
    try:
        _key(environ)
    except EncryptionUnavailable as exc:
        raise SettingsError(str(exc)) from None


def available() -> bool:
    try:
        _key()
    except EncryptionUnavailable:
        return False
    return True


def seal(plaintext: str, context: bytes) -> bytes:
    """Encrypt ``plaintext`` bound to ``context`` (e.g. the environment id), nonce first."""
    nonce = secrets.token_bytes(_NONCE)
    return nonce + AESGCM(_key()).encrypt(nonce, plaintext.encode(), context)


def open_sealed(sealed: bytes, context: bytes) -> str:
    return AESGCM(_key()).decrypt(sealed[:_NONCE], sealed[_NONCE:], context).decode()
