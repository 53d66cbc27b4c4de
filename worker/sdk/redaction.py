"""Secrets kept out of logs and span attributes (worker/sdk/logger.py, worker/sdk/tracing.py):
the values of secret-looking keys, at any depth, and the password of every URL with
credentials (``postgresql://u:PASS@host``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"
#: keys whose values are never logged: ``password``, ``api_key``, ``authToken``, ``secret``,
#: ``Authorization``, ``private_key``, ``cookie``, ``credentials``
_SECRET_KEY = re.compile(r"passw|secret|token|key|auth|cookie|credential", re.IGNORECASE)
_MAX_DEPTH = 8
#: ``scheme://user:password@`` (a DSN or URL carrying credentials): the password part
_URL_PASSWORD = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/@\s]*:)([^@\s]+)(@)")


def redact_text(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@host`` replaced."""
    return _URL_PASSWORD.sub(rf"\1{REDACTED}\3", text) if "://" in text else text


def is_secret_key(name: object) -> bool:
    return isinstance(name, str) and _SECRET_KEY.search(name) is not None


def redact(value: object, depth: int = 0) -> Any:
    """A copy of ``value`` with the values of secret-looking keys replaced (dicts, lists)."""
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_key(k) else redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, depth + 1) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
