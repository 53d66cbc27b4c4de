"""The SDK's HTTP transport: configuration, the one retry loop, JSON bodies, the client object.

Configuration: ``TRIGGER_API_URL`` (default ``http://localhost:3030``; several API replicas may
be listed comma-separated, requests move to the next one when one cannot be reached) and
``TRIGGER_SECRET_KEY`` (worker/sdk/settings.py), or :meth:`Client.configure`. They are read when
a connection is first made, not at import, so a process may set them after importing ``worker``.

Fork safety: one ``httpx.AsyncClient`` per (process, event loop), created on first use and
dropped when ``os.getpid()`` changes, so a connection is never shared across a fork (executors
are forked from a zygote).

Retries (:func:`send_with_retries`, the one loop; the worker protocol's client in
worker/runtime/api_client.py uses it with its own :class:`RetryPolicy` and HTTP client): the
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
import random
import ssl
import sys
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol, TypedDict, TypeVar, Unpack
from urllib.parse import quote

import orjson

from worker.common.serialization import JSON, dumps
from worker.sdk.errors import ApiError, AuthenticationError, ConfigurationError, NotFoundError
from worker.sdk.settings import DEFAULT_API_URL, api_urls, sdk_settings

if TYPE_CHECKING:
    import httpx

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


# --- the retry loop ------------------------------------------------------------------------


class Reply(Protocol):
    """What the retry loop reads of a response: httpx's (SDK) or runtime/http1.py's (worker)."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Mapping[str, str]: ...


R = TypeVar("R", bound=Reply)


@dataclass(frozen=True)
class RetryPolicy:
    """How :func:`send_with_retries` treats failures."""

    #: tries in all (1 = no retry)
    attempts: int
    #: statuses tried again (others of 400 and above are refused at once)
    retry_statuses: frozenset[int]
    #: the pause before try ``attempt + 1`` (0-based ``attempt``), given the failed response
    delay: Callable[[int, Reply | None], float]
    #: statuses after which the next API replica is used (connection errors always move on)
    fail_over_statuses: frozenset[int] = frozenset()
    #: the exceptions of a send that got no response (retried, moving on to the next replica);
    #: empty: ``httpx.TransportError`` (imported by the first request, not by ``import worker``)
    transport_errors: tuple[type[Exception], ...] = ()


def backoff(attempt: int, response: Reply | None) -> float:
    """The SDK's pause: ``retry-after`` (up to 60 s), else 0.5 s doubling, jittered."""
    if response is not None:
        header = response.headers.get("retry-after")
        if header:
            try:
                return min(60.0, max(0.0, float(str(header))))
            except ValueError:
                pass
    return 0.5 * 2.0**attempt * random.uniform(1.0, 1.5)


SDK_POLICY = RetryPolicy(
    attempts=4, retry_statuses=frozenset({408, 429, 500, 502, 503, 504}), delay=backoff
)


async def send_with_retries(
    send: Callable[[], Awaitable[R]],
    policy: RetryPolicy,
    *,
    fail_over: Callable[[], Awaitable[None]],
    refuse: Callable[[R], NoReturn],
    unreachable: Callable[[Exception], BaseException],
) -> R:
    """Send until a response below 400: ``refuse`` raises for a final error response,
    ``unreachable`` makes the error raised when the last try could not connect."""
    transport_errors = policy.transport_errors
    if not transport_errors:
        import httpx  # see RetryPolicy.transport_errors

        transport_errors = (httpx.TransportError,)
    for attempt in range(policy.attempts):
        response: R | None = None
        last = attempt == policy.attempts - 1
        try:
            response = await send()
        except transport_errors as exc:
            await fail_over()
            if last:
                error = unreachable(exc)
                if error is exc:
                    raise
                raise error from exc
        else:
            if response.status_code < 400:
                return response
            if response.status_code not in policy.retry_statuses or last:
                refuse(response)
            if response.status_code in policy.fail_over_statuses:
                await fail_over()
        await asyncio.sleep(policy.delay(attempt, response))
    raise AssertionError("unreachable")


# --- errors --------------------------------------------------------------------------------


def _error_message(response: httpx.Response) -> tuple[str, object]:
    try:
        body = response.json()
    except ValueError:
        return (response.text.strip() or response.reason_phrase), response.text
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            value = body.get(key)
            if value:
                return (value if isinstance(value, str) else orjson.dumps(value).decode()), body
    return response.reason_phrase, body


def raise_for(response: httpx.Response) -> NoReturn:
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


class RequestOptions(TypedDict, total=False):
    #: the request body, encoded by :func:`encode_json`
    json: object
    params: Mapping[str, str] | None
    #: sent as ``x-trigger-request-idempotency-key`` on every try of this request
    idempotency_key: str | None


class Client:
    """The SDK's connection to the API. ``worker.sdk.client`` holds the process's default one
    and its module-level functions are shortcuts to it."""

    def __init__(self) -> None:
        #: what :meth:`configure` set; None falls back to the environment
        self.settings: dict[str, str | float | None] = {
            "api_url": None, "secret_key": None, "timeout": None}
        self.pid = os.getpid()
        self.clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
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
        self.clients.clear()  # the next request builds a client with the new settings

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

    async def fail_over(self) -> None:
        """This loop's API could not be reached: use the next URL (if several) from now on."""
        if "," not in self._url_setting():
            return
        self.url_index += 1
        await self.aclose()  # the next request builds a client for the next URL

    def request_timeout(self) -> float:
        """Seconds one request may take (``configure(timeout=…)``, default 30)."""
        return float(self.settings["timeout"] or 30.0)

    def http(self) -> httpx.AsyncClient:
        """This process's and event loop's ``httpx.AsyncClient``."""
        import httpx  # see send_with_retries

        if os.getpid() != self.pid:  # forked: never reuse the parent's connections
            self.pid = os.getpid()
            self.clients.clear()
        loop = asyncio.get_running_loop()
        client = self.clients.get(loop)
        if client is None:
            timeout = self.request_timeout()
            headers = {"user-agent": USER_AGENT, "accept": "application/json"}
            override = auth_override.get()
            key = self._secret_key()
            if override is None or override.access_token is None or key:
                if not key:
                    raise ConfigurationError(
                        "no secret key: set TRIGGER_SECRET_KEY (e.g. tr_dev_...) in the "
                        "environment, or call worker.configure(secret_key=...)"
                    )
                headers["authorization"] = f"Bearer {key}"
            client = httpx.AsyncClient(
                verify=ssl_context(),
                base_url=self.configured_url(),
                headers=headers,
                timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            )
            self.clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close this event loop's connections (optional; e.g. at application shutdown)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        client = self.clients.pop(loop, None)
        if client is not None and os.getpid() == self.pid:
            await client.aclose()

    async def request(
        self, method: str, path: str, **options: Unpack[RequestOptions]
    ) -> httpx.Response:
        """Send one logical request, retrying as documented; return the 2xx response."""
        body, params = options.get("json"), options.get("params")
        idempotency_key = options.get("idempotency_key")
        content = None if body is None else encode_json(body)
        headers = {"content-type": "application/json"} if content is not None else {}
        override = auth_override.get()
        if override is not None:
            if override.access_token:
                headers["authorization"] = f"Bearer {override.access_token}"
            if override.base_url:
                path = override.base_url.rstrip("/") + path
        if idempotency_key:
            headers[REQUEST_IDEMPOTENCY_HEADER] = idempotency_key
        traceparent = _current_traceparent()
        # a run triggered from here joins this trace (docs/api.md, "Traces and logs")
        if traceparent:
            headers["traceparent"] = traceparent

        def send() -> Awaitable[httpx.Response]:
            return self.http().request(
                method, path, content=content, params=params, headers=headers)

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
