"""The SDK's HTTP transport: configuration, the one retry loop, JSON bodies, the client object.

Configuration: ``TRIGGER_API_URL`` (default ``http://localhost:3030``; several API replicas may
be listed comma-separated, requests move to the next one when one cannot be reached) and
``TRIGGER_SECRET_KEY`` (worker/sdk/settings.py), or :meth:`Client.configure`. They are read when
a connection is first made, not at import, so a process may set them after importing ``worker``.

HTTP: requests go over worker/sdk/http1.py, the small HTTP/1.1 client the worker protocol uses
too (httpx cost a caller ~0.3 ms of CPU per request, four times as much: docs/benchmarks.md);
through httpx (``http_proxied.py``) when a proxy is configured, and httpx for the realtime
streams (:meth:`Client.http`). Fork safety: the connections are per (process, event loop),
made on first use and dropped when ``os.getpid()`` changes, so a connection is never shared
across a fork (executors are forked from a zygote).

Retries (worker/sdk/http_retries.py, the one loop the worker protocol's client uses too): the
SDK retries 408, 429, 5xx and connection errors 3 times with exponential backoff (0.5 s,
1 s, 2 s, jittered; ``retry-after`` honoured up to 60 s). Each logical trigger carries one
``x-trigger-request-idempotency-key`` on every HTTP attempt, so the server creates one run
however many times the request is sent (docs/api.md).

JSON: request bodies are encoded here only (:func:`encode_json`); a payload that is already JSON
text goes in as an ``orjson.Fragment`` (:func:`payload_members`), never decoded and re-encoded.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import weakref
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypedDict, Unpack
from urllib.parse import quote, urlencode

import orjson

from worker.common.serialization import JSON, dumps
from worker.sdk.errors import ApiError, AuthenticationError, ConfigurationError, NotFoundError
from worker.sdk.http1 import Http1Client, Response, proxy_configured
from worker.sdk.http_retries import SDK_POLICY, send_with_retries
from worker.sdk.settings import DEFAULT_API_URL, api_urls, sdk_settings
from worker.sdk.tls import ssl_context

if TYPE_CHECKING:
    import httpx

    from worker.sdk.http_proxied import HttpxSession

USER_AGENT = "trigger-worker-python/0.1.0"
REQUEST_IDEMPOTENCY_HEADER = "x-trigger-request-idempotency-key"

#: a request body the SDK builds (``orjson.Fragment`` members allowed); responses are decoded
#: by :meth:`Client.json` and typed by the caller's model
JsonBody = dict[str, object]


# --- JSON bodies ---------------------------------------------------------------------------


def encode_json(body: object) -> bytes:
    """The one place request bodies become bytes (``orjson.Fragment`` members go in as is)."""
    return orjson.dumps(body)


def payload_members(payload: object, *, key: str = "payload") -> JsonBody:
    """``{"payload": <value>}`` for a JSON payload (its text embedded unchanged), else
    ``{"payload": "<text>", "payloadType": "<type>"}`` (docs/api.md, "Serialised data")."""
    data, data_type = dumps(payload)
    if data_type == JSON:
        return {key: orjson.Fragment(data)}
    return {key: data, f"{key}Type": data_type}


def path_segment(value: str) -> str:
    return quote(value, safe="")


# --- errors --------------------------------------------------------------------------------


class ErrorReply(Protocol):
    """What :func:`raise_for` reads of an error response (http1's, or httpx's for streams)."""

    @property
    def status_code(self) -> int: ...
    @property
    def text(self) -> str: ...
    def json(self) -> Any: ...


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return f"HTTP {status}"


def _error_message(response: ErrorReply) -> tuple[str, object]:
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip() or _reason(response.status_code)), response.text
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if value:
                return (value if isinstance(value, str) else orjson.dumps(value).decode()), body
    return _reason(response.status_code), body


def raise_for(response: ErrorReply) -> NoReturn:
    """Raise the SDK error for an error response (401/403, 404, other)."""
    message, body = _error_message(response)
    status = response.status_code
    if status in (401, 403):
        raise AuthenticationError(status, message, body)
    if status == 404:
        raise NotFoundError(status, message, body)
    raise ApiError(status, message, body)


# --- the client ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuthOverride:
    """``auth.with_auth``'s credentials for the requests made inside it (worker/sdk/auth.py)."""

    access_token: str | None = None
    base_url: str | None = None


auth_override: contextvars.ContextVar[AuthOverride | None] = contextvars.ContextVar(
    "trigger_auth_override", default=None
)

class RequestOptions(TypedDict, total=False):
    #: the request body, encoded by :func:`encode_json`
    json: object
    params: Mapping[str, str] | None
    #: sent as ``x-trigger-request-idempotency-key`` on every try of this request
    idempotency_key: str | None


class _LoopClients:
    """One event loop's connections: a session per API URL (http1, or httpx behind a proxy)
    for requests, and an ``httpx.AsyncClient`` for streams, made when first needed."""

    __slots__ = ("sessions", "stream")

    def __init__(self) -> None:
        self.sessions: dict[str, Http1Client | HttpxSession] = {}
        self.stream: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        for session in self.sessions.values():
            await session.aclose()
        if self.stream is not None:
            await self.stream.aclose()


class Client:
    """The SDK's connection to the API. ``worker.sdk.client`` holds the process's default one
    and its module-level functions are shortcuts to it."""

    def __init__(self) -> None:
        #: what :meth:`configure` set; None falls back to the environment
        self.settings: dict[str, str | float | None] = {
            "api_url": None, "secret_key": None, "timeout": None}
        self.pid = os.getpid()
        self.clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
            weakref.WeakKeyDictionary())
        #: which of several comma-separated API URLs is in use now
        self.url_index = 0

    def configure(
        self,
        api_url: str | None = None,
        secret_key: str | None = None,
        timeout: float | None = None,
        *,
        base_url: str | None = None,
        access_token: str | None = None,
    ) -> None:
        """Set the API URL / secret key / request timeout for this process (overrides the env).
        ``base_url`` / ``access_token`` are Trigger.dev's names for the first two."""
        api_url = api_url if api_url is not None else base_url
        secret_key = secret_key if secret_key is not None else access_token
        if api_url is not None:
            self.settings["api_url"] = api_url
        if secret_key is not None:
            self.settings["secret_key"] = secret_key
        if timeout is not None:
            self.settings["timeout"] = timeout
        self.clients.clear()  # the next request connects with the new settings

    def _url_setting(self) -> str:
        return str(self.settings["api_url"] or sdk_settings().api_url)

    def configured_url(self) -> str:
        """The configured API URL (of several, the one in use), whatever ``with_auth`` says."""
        try:
            urls = api_urls(self._url_setting())
        except ValueError:
            urls = [DEFAULT_API_URL]
        return urls[self.url_index % len(urls)]

    def api_url(self) -> str:
        """The API URL in use (``with_auth``'s base URL inside one)."""
        override = auth_override.get()
        if override is not None and override.base_url:
            return override.base_url.rstrip("/")
        return self.configured_url()

    def _secret_key(self) -> str | None:
        return str(self.settings["secret_key"] or sdk_settings().secret_key or "") or None

    def _authorization(self) -> str:
        """The request's bearer: ``with_auth``'s access token, else the secret key."""
        override = auth_override.get()
        if override is not None and override.access_token:
            return f"Bearer {override.access_token}"
        key = self._secret_key()
        if not key:
            raise ConfigurationError(
                "no secret key: set TRIGGER_SECRET_KEY (e.g. tr_dev_...) in the "
                "environment, or call worker.configure(secret_key=...)"
            )
        return f"Bearer {key}"

    async def fail_over(self) -> None:
        """This loop's API could not be reached: use the next URL (if several) from now on."""
        if "," not in self._url_setting():
            return
        self.url_index += 1
        await self.aclose()  # the next request connects to the next URL

    def request_timeout(self) -> float:
        """Seconds one request may take (``configure(timeout=…)``, default 30)."""
        return float(self.settings["timeout"] or 30.0)

    def _loop_clients(self) -> _LoopClients:
        if os.getpid() != self.pid:  # forked: never reuse the parent's connections
            self.pid = os.getpid()
            self.clients.clear()
        loop = asyncio.get_running_loop()
        clients = self.clients.get(loop)
        if clients is None:
            clients = self.clients[loop] = _LoopClients()
        return clients

    def session(self, base_url: str) -> Http1Client | HttpxSession:
        """This process's and event loop's connections to ``base_url``."""
        clients = self._loop_clients()
        session = clients.sessions.get(base_url)
        if session is None:
            timeout = self.request_timeout()
            headers = {"user-agent": USER_AGENT, "accept": "application/json"}
            # httpx's limits: a caller's code may hold many long-polls (runs.poll) at once
            connect = min(timeout, 10.0)
            if proxy_configured():
                from worker.sdk.http_proxied import HttpxSession

                session = HttpxSession(base_url, headers, timeout=timeout,
                                       connect_timeout=connect, max_connections=100, max_idle=20)
            else:
                session = Http1Client(base_url, headers, timeout=timeout,
                                      connect_timeout=connect, max_connections=100, max_idle=20)
            clients.sessions[base_url] = session
        return session

    def http(self) -> httpx.AsyncClient:
        """This process's and event loop's ``httpx.AsyncClient`` on the API, for streams."""
        import httpx  # only for streams (and proxies): not imported by a plain request

        clients = self._loop_clients()
        if clients.stream is None:
            timeout = self.request_timeout()
            clients.stream = httpx.AsyncClient(
                verify=ssl_context(),
                base_url=self.configured_url(),
                headers={"user-agent": USER_AGENT, "accept": "application/json",
                         "authorization": self._authorization()},
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            )
        return clients.stream

    async def aclose(self) -> None:
        """Close this event loop's connections (optional; e.g. at application shutdown)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        clients = self.clients.pop(loop, None)
        if clients is not None and os.getpid() == self.pid:
            await clients.aclose()

    async def request(
        self, method: str, path: str, **options: Unpack[RequestOptions]
    ) -> Response:
        """Send one logical request, retrying as documented; return the 2xx response."""
        body, params = options.get("json"), options.get("params")
        idempotency_key = options.get("idempotency_key")
        content = b"" if body is None else encode_json(body)
        headers = {"authorization": self._authorization()}
        if body is not None:
            headers["content-type"] = "application/json"
        if idempotency_key:
            headers[REQUEST_IDEMPOTENCY_HEADER] = idempotency_key
        traceparent = _current_traceparent()
        # a run triggered from here joins this trace (docs/api.md, "Traces and logs")
        if traceparent:
            headers["traceparent"] = traceparent
        if params:
            path = f"{path}?{urlencode(params)}"
        override = auth_override.get()
        base_url = override.base_url.rstrip("/") if override and override.base_url else None

        def send() -> Awaitable[Response]:
            session = self.session(base_url or self.configured_url())
            return session.request(method, path, content=content, headers=headers)

        def unreachable(exc: Exception) -> ApiError:
            return ApiError(0, f"cannot reach the API at {self.api_url()}: {exc!r}")

        return await send_with_retries(
            send, SDK_POLICY, fail_over=self.fail_over, refuse=raise_for, unreachable=unreachable)

    async def json(
        self, method: str, path: str, **options: Unpack[RequestOptions]
    ) -> dict[str, Any]:
        """:meth:`request`, returning the response's JSON object (decoded, not yet typed: the
        caller turns it into its model, e.g. ``Run.from_api``)."""
        response = await self.request(method, path, **options)
        data = response.json()
        if not isinstance(data, dict):
            raise ApiError(response.status_code, "expected a JSON object", data)
        return data


#: the process's client; the functions below are shortcuts to it
default = Client()
configure = default.configure
api_url = default.api_url
request_timeout = default.request_timeout
request = default.request
json = default.json
aclose = default.aclose


def _current_traceparent() -> str | None:
    """The calling code's span, when OpenTelemetry is in use in this process. Without it no span
    can be recording, and the worker's supervisor (which never traces) does not import it: ~8 MiB
    and tens of ms of its start (docs/benchmarks.md)."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    from worker.sdk import tracing  # lazy: see above

    return tracing.current_traceparent()
