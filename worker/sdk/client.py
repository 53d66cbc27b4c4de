"""The SDK client, as functions: configuration, requests and triggering in one namespace.

Shortcuts to the process's :class:`worker.sdk.transport.Client` (``transport.default``) and to
worker/sdk/triggering.py, for code that calls ``client.trigger(...)`` or
``client.configure(...)``. The SDK's own modules use transport and triggering directly.
"""

from __future__ import annotations

from worker.sdk import transport
from worker.sdk.tls import ssl_context
from worker.sdk.transport import aclose, api_url, configure, request
from worker.sdk.triggering import BatchHandle, RunHandle, batch_trigger, trigger

__all__ = [
    "BatchHandle",
    "RunHandle",
    "aclose",
    "api_url",
    "batch_trigger",
    "configure",
    "request",
    "ssl_context",
    "trigger",
]

#: the default client's state, for tests that point the SDK at a test API and restore it:
#: ``saved = dict(client._settings)`` … ``client._settings.update(saved)``;
#: ``client._clients.clear()`` drops the connections; ``client._client()`` is this loop's
_settings = transport.default.settings
_clients = transport.default.clients
_client = transport.default.http
