"""A small HTTP/1.1 client on asyncio streams: the SDK's and the worker protocol's transport.

Why not httpx: in the supervisor, httpx with httpcore and anyio was ~45 % of the CPU under drain
and ~10 MiB of its memory (docs/benchmarks.md, "Where the time goes"), for JSON POSTs to one
API. This client does only what the worker protocol needs: requests with a ``Content-Length``
body, responses with a ``Content-Length``, chunked or read-to-close body (or handed over line
by line as it arrives: the streamed ``/dequeue``), keep-alive
connections reused (up to ``max_connections`` at once), a connect timeout and a whole-request
timeout, http and https (the TLS context is the SDK's, loaded only for https). No redirects,
no proxies (worker/runtime/api_client.py uses httpx when a proxy is configured), no
compression (it never asks for it).

A kept-alive connection the server closed while idle (uvicorn closes them after 5 s) is
noticed before reuse; if the server closes it at the moment the request goes out (no byte of a
response came back), the request is sent once more on a new connection. Every other failure
is a :class:`TransportError` for the caller's retry loop (worker/sdk/transport.py).
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = ["ConnectError", "Http1Client", "Lines", "RequestTimeout", "Response", "TransportError",
           "proxy_configured"]

#: what a streamed response's lines are handed to, one at a time, as they arrive
Lines = Callable[[bytes], Awaitable[None]]


def proxy_configured() -> bool:
    """Whether the environment names a proxy: this client connects directly, so its callers
    go through httpx then (worker/sdk/http_proxied.py), which honours it (and ``NO_PROXY``)."""
    return any(os.environ.get(name) for name in (
        "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"))


class TransportError(Exception):
    """The request got no complete response: connecting failed, the connection broke, or it
    timed out. Worth another try (on another API replica)."""


class ConnectError(TransportError):
    """No connection could be made (refused, unreachable, or the connect timed out)."""


class RequestTimeout(TransportError):
    """The whole exchange took longer than the request's timeout."""


class _ClosedBeforeResponse(Exception):
    """A reused connection was closed by the server before any byte of a response."""


class Response:
    """A complete response: the status, the headers (names lower-cased, repeated ones joined
    with ``", "``) and the body."""

    __slots__ = ("content", "headers", "keep_alive", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes,
                 keep_alive: bool) -> None:
        self.status_code = status_code
        self.headers = headers
        self.content = content
        #: whether the connection may carry another request
        self.keep_alive = keep_alive

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body decoded by orjson (``orjson.JSONDecodeError`` is a ``ValueError``)."""
        return orjson.loads(self.content)

    def __repr__(self) -> str:
        return f"<Response {self.status_code}>"


class _Connection:
    __slots__ = ("reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def usable(self) -> bool:
        """Still open (an idle connection the server closed has seen its EOF by now: the
        event loop keeps reading idle sockets)."""
        return not (self.writer.is_closing() or self.reader.at_eof()
                    or self.reader.exception() is not None)

    def close(self) -> None:
        self.writer.close()


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, int, dict[str, str]]:
    try:
        block = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _ClosedBeforeResponse from exc
        raise
    lines = block[:-4].decode("latin-1").split("\r\n")
    version, status, *_ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        value = value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return version, int(status), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, ignored
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("malformed chunk")


async def _read_lines(reader: asyncio.StreamReader, headers: dict[str, str],
                     lines: Lines) -> None:
    """A body handed to ``lines`` line by line (empty lines skipped) as its bytes arrive."""
    pending = b""

    async def take(data: bytes) -> None:
        nonlocal pending
        *complete, pending = (pending + data).split(b"\n")
        for line in complete:
            if line.strip():
                await lines(line)

    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers, ignored
                    pass
                break
            await take(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise ValueError("malformed chunk")
    elif "content-length" in headers:
        await take(await reader.readexactly(int(headers["content-length"])))
    else:
        await take(await reader.read())
    await take(b"\n")


async def read_response(reader: asyncio.StreamReader, method: str,
                        lines: Lines | None = None) -> Response:
    """One response from ``reader`` (informational 1xx responses skipped); with ``lines``, a
    2xx's body goes to it line by line as it arrives (the response's ``content`` is empty)."""
    version, status, headers = await _read_head(reader)
    while 100 <= status < 200:
        version, status, headers = await _read_head(reader)
    connection = headers.get("connection", "").lower()
    keep_alive = ("close" not in connection if version == "HTTP/1.1"
                  else "keep-alive" in connection)
    if method == "HEAD" or status in (204, 304):
        body = b""
    elif lines is not None and 200 <= status < 300:
        await _read_lines(reader, headers, lines)
        body = b""
        keep_alive = keep_alive and ("chunked" in headers.get("transfer-encoding", "").lower()
                                     or "content-length" in headers)
    elif "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    elif "content-length" in headers:
        body = await reader.readexactly(int(headers["content-length"]))
    else:  # the body ends when the server closes the connection
        body = await reader.read()
        keep_alive = False
    return Response(status, headers, body, keep_alive)


class Http1Client:
    """Keep-alive connections to one server (``base_url``: scheme, host, port, optional path
    prefix). ``headers`` go with every request. Safe for concurrent requests of one event
    loop; at most ``max_connections`` exchanges at once (others wait their turn)."""

    def __init__(self, base_url: str, headers: Mapping[str, str] | None = None, *,
                 timeout: float = 30.0, connect_timeout: float = 3.0,
                 max_connections: int = 16, max_idle: int = 8,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {base_url!r}")
        self.base_url = base_url
        self.host = parts.hostname
        https = parts.scheme == "https"
        self.port = parts.port or (443 if https else 80)
        self.prefix = parts.path.rstrip("/")
        if https and ssl_context is None:
            from worker.sdk.tls import ssl_context as sdk_ssl_context

            ssl_context = sdk_ssl_context()
        self.ssl = ssl_context if https else None
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        host = f"[{self.host}]" if ":" in self.host else self.host
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        # the headers every request carries, encoded once
        fixed = {"host": host, **(headers or {})}
        self._fixed = "".join(f"{name}: {value}\r\n" for name, value in fixed.items()).encode()
        self._idle: list[_Connection] = []
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False
        #: connections opened so far (the tests and the bench read it: reuse works)
        self.connections_opened = 0

    def _head(self, method: str, path: str, length: int,
              headers: Mapping[str, str] | None) -> bytes:
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        return b"".join((
            f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode(), self._fixed,
            f"{extra}content-length: {length}\r\n\r\n".encode()))

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.ssl)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise ConnectError(
                f"cannot connect to {self.base_url}: {exc!r}") from exc
        self.connections_opened += 1
        return _Connection(reader, writer)

    def _take_idle(self) -> _Connection | None:
        while self._idle:
            conn = self._idle.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    async def request(self, method: str, path: str, *, content: bytes = b"",
                      headers: Mapping[str, str] | None = None,
                      timeout: float | None = None, lines: Lines | None = None) -> Response:
        """Send one request and read its whole response (any status: the caller decides).
        Raises :class:`TransportError` when no complete response came back. With ``lines``,
        a 2xx's body is handed to it line by line as it arrives (a streamed response, e.g.
        NDJSON), all within ``timeout``."""
        if self._closed:
            raise TransportError("the client is closed")
        message = self._head(method, path, len(content), headers) + content
        limit = self.timeout if timeout is None else timeout
        async with self._slots:
            try:
                async with asyncio.timeout(limit):
                    return await self._exchange(method, message, lines)
            except TimeoutError as exc:
                raise RequestTimeout(
                    f"{method} {self.base_url}{path}: no response within {limit:g} s") from exc

    async def _exchange(self, method: str, message: bytes, lines: Lines | None) -> Response:
        conn = self._take_idle()
        reused = conn is not None
        while True:
            if conn is None:
                conn = await self._connect()
            current, done = conn, False
            try:
                conn.writer.write(message)
                await conn.writer.drain()
                response = await read_response(conn.reader, method, lines)
                done = True
            except (_ClosedBeforeResponse, ConnectionResetError, BrokenPipeError) as exc:
                if reused:  # the server dropped the idle connection as we used it: once more
                    reused, conn = False, None
                    continue
                raise TransportError(f"the connection to {self.base_url} closed: {exc!r}") from exc
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ValueError) as exc:
                raise TransportError(f"{self.base_url}: broken response: {exc!r}") from exc
            finally:
                if not done:
                    current.close()  # cancelled, timed out or broken: never reused
            if response.keep_alive and not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(conn)
            else:
                conn.close()
            return response

    async def post(self, path: str, content: bytes, *, headers: Mapping[str, str] | None = None,
                   timeout: float | None = None) -> Response:
        return await self.request("POST", path, content=content, headers=headers,
                                  timeout=timeout)

    async def aclose(self) -> None:
        """Close the idle connections; those in use close when their exchange ends."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
