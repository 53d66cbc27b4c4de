"""The SDK's TLS context: one per process tree."""

from __future__ import annotations

import ssl

_ssl: ssl.SSLContext | None = None


def ssl_context() -> ssl.SSLContext:
    """One TLS context per process tree: built before the fork (the zygote warms it), shared by
    every executor's client instead of each loading the CA bundle again (~6 MiB each)."""
    global _ssl
    if _ssl is None:
        try:
            import certifi

            _ssl = ssl.create_default_context(cafile=certifi.where())
        except ImportError:
            _ssl = ssl.create_default_context()
    return _ssl
