"""The HTTP client behind ``tasks``, ``runs`` and ``batch``: configuration, transport, triggers.

Configuration: ``TRIGGER_API_URL`` (default ``http://localhost:3030``) and ``TRIGGER_SECRET_KEY``
from the environment, or :func:`configure`. They are read when the first request is made, not at
import, so a process may set them after importing ``worker``.

Fork safety: one ``httpx.AsyncClient`` per (process, event loop), created on first use and
dropped when ``os.getpid()`` changes, so a connection is never shared across a fork (executors
are forked from a zygote). ``httpx`` itself is imported only here, lazily.

Retries: 408, 429, 5xx and connection errors are retried 3 times with exponential backoff
(0.5 s, 1 s, 2 s, jittered; ``retry-after`` honoured up to 60 s). Each logical trigger carries
one ``x-trigger-request-idempotency-key`` (a UUID4) on every HTTP attempt, so the server creates
one run however many times the request is sent.

Wire format (details in ``docs/api.md``): a payload that :func:`dumps` makes plain JSON is sent
as the JSON value itself (``{"payload": {...}}``); any other data type is sent as its text with
its type (``{"payload": "<super+json text>", "payloadType": "application/super+json"}``). Run
objects come back the same way (``output`` + ``outputType``) and are decoded with ``loads``.
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import os
import random
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import orjson

from worker.common.serialization import JSON, dumps
from worker.sdk import tracing
from worker.sdk.errors import ApiError, AuthenticationError, ConfigurationError, NotFoundError
from worker.sdk.task import Queue

if TYPE_CHECKING:
    import httpx

DEFAULT_API_URL = "http://localhost:3030"
USER_AGENT = "trigger-worker-python/0.1.0"
MAX_RETRIES = 3
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REQUEST_IDEMPOTENCY_HEADER = "x-trigger-request-idempotency-key"

# --- configuration and the per-process, per-loop client cache ------------------------------

_settings: dict[str, str | float | None] = {"api_url": None, "secret_key": None, "timeout": None}
_pid = os.getpid()
_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
    weakref.WeakKeyDictionary()
)


def configure(
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
        _settings["api_url"] = api_url
    if secret_key is not None:
        _settings["secret_key"] = secret_key
    if timeout is not None:
        _settings["timeout"] = timeout
    _clients.clear()  # the next request builds a client with the new settings


@dataclass(frozen=True)
class AuthOverride:
    """``auth.with_auth``'s credentials for the requests made inside it (worker/sdk/auth.py)."""

    access_token: str | None = None
    base_url: str | None = None


auth_override: contextvars.ContextVar[AuthOverride | None] = contextvars.ContextVar(
    "trigger_auth_override", default=None
)


#: which of several comma-separated API URLs this process uses now (see :func:`_fail_over`)
_url_index = 0


def api_url() -> str:
    """The API URL in use. ``TRIGGER_API_URL`` may list replicas, comma-separated: requests go
    to one and move to the next when it cannot be reached."""
    override = auth_override.get()
    if override is not None and override.base_url:
        return override.base_url.rstrip("/")
    return _configured_url()


def _configured_url() -> str:
    """The configured API URL (of several, the one in use), whatever ``with_auth`` says."""
    url = _settings["api_url"] or os.environ.get("TRIGGER_API_URL") or DEFAULT_API_URL
    urls = [u.strip().rstrip("/") for u in str(url).split(",") if u.strip()] or [DEFAULT_API_URL]
    return urls[_url_index % len(urls)]


async def _fail_over() -> None:
    """This loop's API could not be reached: use the next URL (if several) from now on."""
    global _url_index
    url = _settings["api_url"] or os.environ.get("TRIGGER_API_URL") or ""
    if "," not in str(url):
        return
    _url_index += 1
    await aclose()  # the next request builds a client for the next URL


def _secret_key() -> str:
    key = _settings["secret_key"] or os.environ.get("TRIGGER_SECRET_KEY")
    if not key:
        raise ConfigurationError(
            "no secret key: set TRIGGER_SECRET_KEY (e.g. tr_dev_...) in the environment, "
            "or call worker.configure(secret_key=...)"
        )
    return str(key)


_ssl: Any = None


def ssl_context() -> Any:
    """One TLS context per process tree: built before the fork (the zygote warms it), shared by
    every executor's client instead of each loading the CA bundle again (~6 MiB each)."""
    global _ssl
    if _ssl is None:
        import ssl

        try:
            import certifi

            _ssl = ssl.create_default_context(cafile=certifi.where())
        except ImportError:
            _ssl = ssl.create_default_context()
    return _ssl


def request_timeout() -> float:
    """Seconds a request may take (``configure(timeout=…)``, default 30)."""
    return float(_settings["timeout"] or 30.0)


def _client() -> httpx.AsyncClient:
    global _pid
    if os.getpid() != _pid:  # forked: never reuse the parent's connections
        _pid = os.getpid()
        _clients.clear()
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        import httpx

        timeout = request_timeout()
        headers = {"user-agent": USER_AGENT, "accept": "application/json"}
        override = auth_override.get()
        has_key = bool(_settings["secret_key"] or os.environ.get("TRIGGER_SECRET_KEY"))
        if override is None or override.access_token is None or has_key:
            headers["authorization"] = f"Bearer {_secret_key()}"
        client = httpx.AsyncClient(
            verify=ssl_context(),
            base_url=_configured_url(),
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )
        _clients[loop] = client
    return client


async def aclose() -> None:
    """Close this event loop's connections (optional; e.g. at application shutdown)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    client = _clients.pop(loop, None)
    if client is not None and os.getpid() == _pid:
        await client.aclose()


# --- requests ------------------------------------------------------------------------------


def _error_message(response: httpx.Response) -> tuple[str, Any]:
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


def _raise_for(response: httpx.Response) -> None:
    message, body = _error_message(response)
    status = response.status_code
    if status in (401, 403):
        raise AuthenticationError(status, message, body)
    if status == 404:
        raise NotFoundError(status, message, body)
    raise ApiError(status, message, body)


def _retry_after(response: httpx.Response | None, attempt: int) -> float:
    if response is not None:
        header = response.headers.get("retry-after")
        if header:
            try:
                return min(60.0, max(0.0, float(header)))
            except ValueError:
                pass
    return 0.5 * 2**attempt * random.uniform(1.0, 1.5)


async def request(
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    params: dict[str, str] | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    """Send one logical request (retrying as documented); return the 2xx response."""
    import httpx

    headers = {"content-type": "application/json"} if content is not None else {}
    override = auth_override.get()
    if override is not None:
        if override.access_token:
            headers["authorization"] = f"Bearer {override.access_token}"
        if override.base_url:
            path = override.base_url.rstrip("/") + path
    if idempotency_key:
        headers[REQUEST_IDEMPOTENCY_HEADER] = idempotency_key
    traceparent = tracing.current_traceparent()
    if traceparent:  # a run triggered from here joins this trace (docs/api.md, "Traces")
        headers["traceparent"] = traceparent
    for attempt in range(MAX_RETRIES + 1):
        response: httpx.Response | None = None
        try:
            response = await _client().request(
                method, path, content=content, params=params, headers=headers
            )
        except httpx.TransportError as exc:
            if attempt == MAX_RETRIES:
                raise ApiError(0, f"cannot reach the API at {api_url()}: {exc!r}") from exc
            await _fail_over()
        else:
            if response.status_code < 400:
                return response
            if response.status_code not in RETRY_STATUSES or attempt == MAX_RETRIES:
                _raise_for(response)
        await asyncio.sleep(_retry_after(response, attempt))
    raise AssertionError("unreachable")


def path_segment(value: str) -> str:
    return quote(value, safe="")


# --- trigger options -----------------------------------------------------------------------

_OPTION_NAMES = {
    "idempotency_key": "idempotencyKey",
    "idempotency_key_ttl": "idempotencyKeyTTL",
    "delay": "delay",
    "ttl": "ttl",
    "tags": "tags",
    "priority": "priority",
    "queue": "queue",
    "concurrency_key": "concurrencyKey",
    "max_attempts": "maxAttempts",
    "max_duration": "maxDuration",
    "machine": "machine",
    "metadata": "metadata",
    "version": "lockToVersion",
    "lock_to_version": "lockToVersion",
    "debounce": "debounce",
}
#: options of the batch itself; every other option is a default for each item
BATCH_OPTIONS = frozenset({"idempotency_key", "idempotency_key_ttl"})


def _duration(value: Any) -> Any:
    """``"1h"`` stays; seconds and timedeltas become ``"<n>s"``; datetimes become ISO text."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.astimezone()
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return f"{max(0, round(value.total_seconds()))}s"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{max(0, round(value))}s"
    return value


def wire_options(options: dict[str, Any]) -> dict[str, Any]:
    """snake_case trigger options -> the camelCase wire object (None values dropped)."""
    out: dict[str, Any] = {}
    for name, value in options.items():
        wire = _OPTION_NAMES.get(name)
        if wire is None:
            raise TypeError(f"unknown trigger option {name!r}; allowed: {sorted(_OPTION_NAMES)}")
        if value is None:
            continue
        if name in ("delay", "idempotency_key_ttl"):
            value = _duration(value)
        elif name == "ttl" and isinstance(value, dt.timedelta):
            value = round(value.total_seconds())
        elif name == "tags":
            value = [value] if isinstance(value, str) else list(value)
        elif name == "queue" and isinstance(value, Queue):
            value = value.name
        elif name == "idempotency_key":
            from worker.sdk.idempotency_keys import for_trigger

            value = for_trigger(value)
        elif name == "debounce":
            value = {"maxDelay" if k == "max_delay" else k: v for k, v in dict(value).items()}
        elif name == "metadata":
            _, data_type = dumps(value)
            if data_type != JSON or not isinstance(value, dict):
                raise TypeError("metadata must be a JSON object (str keys, JSON values)")
        out[wire] = value
    return out


def encode_payload(payload: Any) -> bytes:
    """The ``"payload": ...`` members of a request body, as raw JSON (no re-encoding)."""
    data, data_type = dumps(payload)
    if data_type == JSON:
        return b'"payload":' + data.encode()
    return b'"payload":' + orjson.dumps(data) + b',"payloadType":' + orjson.dumps(data_type)


# --- trigger / batch_trigger ---------------------------------------------------------------


@dataclass(frozen=True)
class RunHandle:
    """What triggering returns: the new run's id (``run_...``)."""

    id: str
    task_identifier: str
    is_cached: bool = False
    public_access_token: str | None = None


@dataclass(frozen=True)
class BatchHandle:
    """What batch triggering returns: the batch id and one handle per item, in item order."""

    batch_id: str
    runs: list[RunHandle] = field(default_factory=list)
    is_cached: bool = False

    @property
    def run_count(self) -> int:
        return len(self.runs)


def with_parent(wire: dict[str, Any]) -> dict[str, Any]:
    """Inside a run, a triggered run is its child (canceling the parent cancels it too)."""
    from worker.sdk.context import current_context

    ctx = current_context()
    if ctx is not None and "parentRunId" not in wire:
        wire["parentRunId"] = ctx.run.id
    return wire


@tracing.durable_operation("trigger")
async def trigger(task_id: str, payload: Any = None, **options: Any) -> RunHandle:
    """Trigger one run of ``task_id``; return at once with its handle.

    Inside a run the trigger is journaled, so a replay after a checkpoint gets the same child
    back instead of triggering it again."""
    from worker.sdk import durable

    wire = with_parent(wire_options(options))
    if durable.maybe_state() is not None:
        seq, entry = durable.replayed("trigger", task_id)
        if entry is not None:
            return RunHandle(id=entry["outcome"]["id"], task_identifier=task_id, is_cached=True)
        wire["journalSeq"] = seq
        wire["parentAttempt"] = durable.state().attempt_number
    body = b"{" + encode_payload(payload) + b',"options":' + orjson.dumps(wire)
    response = await request(
        "POST",
        f"/api/v1/tasks/{path_segment(task_id)}/trigger",
        content=body + b"}",
        idempotency_key=str(uuid.uuid4()),
    )
    data = response.json()
    return RunHandle(
        id=data["id"],
        task_identifier=task_id,
        is_cached=bool(data.get("isCached", False)),
        public_access_token=response.headers.get("x-trigger-jwt"),
    )


def split_item(item: Any) -> tuple[Any, dict[str, Any]]:
    """A batch item is a payload, or ``{"payload": ..., "options": {...}}`` (only those keys)."""
    if isinstance(item, dict) and "payload" in item and set(item) <= {"payload", "options"}:
        return item["payload"], dict(item.get("options") or {})
    return item, {}


async def batch_trigger(task_id: str, items: Any, **options: Any) -> BatchHandle:
    """Trigger one run of ``task_id`` per item (payloads or ``{payload, options}`` dicts); items
    may be a list, any iterable or an async iterable (read to the end first).

    ``idempotency_key``/``idempotency_key_ttl`` apply to the batch; any other option is a
    default for every item, which the item's own options override.
    """
    items = await collect_items(items)
    batch_opts = {k: options.pop(k) for k in list(options) if k in BATCH_OPTIONS}
    parts = []
    for item in items:
        payload, item_opts = split_item(item)
        merged = with_parent(wire_options({**options, **item_opts}))
        parts.append(b"{" + encode_payload(payload) + b',"options":' + orjson.dumps(merged) + b"}")
    response = await request(
        "POST",
        f"/api/v1/tasks/{path_segment(task_id)}/batch",
        content=batch_body(parts, batch_opts),
        idempotency_key=str(uuid.uuid4()),
    )
    return batch_handle(response.json(), task_id)


async def collect_items(items: Any) -> list[Any]:
    """A batch's items as a list (Trigger.dev also takes AsyncIterables and streams)."""
    if isinstance(items, list):
        return items
    if hasattr(items, "__aiter__"):
        return [item async for item in items]
    if isinstance(items, str | bytes | dict) or not hasattr(items, "__iter__"):
        raise TypeError("batch items must be a list, an iterable or an async iterable")
    return list(items)


def batch_body(parts: list[bytes], batch_opts: dict[str, Any]) -> bytes:
    """``{"items": [...]}`` plus the batch's own ``options`` only when there are some."""
    body = b'{"items":[' + b",".join(parts) + b"]"
    wire = wire_options(batch_opts)
    if wire:
        body += b',"options":' + orjson.dumps(wire)
    return body + b"}"


def batch_handle(data: dict[str, Any], task_id: str | None = None) -> BatchHandle:
    runs = [
        RunHandle(
            id=r["id"] if isinstance(r, dict) else r,
            task_identifier=(r.get("taskIdentifier") if isinstance(r, dict) else None)
            or task_id
            or "",
            is_cached=bool(r.get("isCached", False)) if isinstance(r, dict) else False,
        )
        for r in data.get("runs", [])
    ]
    return BatchHandle(
        batch_id=data.get("id") or data["batchId"],
        runs=runs,
        is_cached=bool(data.get("isCached", False)),
    )
