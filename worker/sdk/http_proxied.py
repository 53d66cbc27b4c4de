"""The worker protocol's transport when a proxy is configured: httpx behind http1's interface.

worker/sdk/http1.py connects directly. A worker whose environment names a proxy
(``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, with ``NO_PROXY``) keeps going through it, as
it did when the worker's client was httpx: this session is an ``httpx.AsyncClient`` (which
reads those variables) giving http1's :class:`~worker.sdk.http1.Response` and
:class:`~worker.sdk.http1.TransportError`, so api_client.py has one code path.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from worker.sdk.http1 import ConnectError, Lines, RequestTimeout, Response, TransportError
from worker.sdk.tls import ssl_context


class HttpxSession:
    def __init__(self, base_url: str, headers: Mapping[str, str], *, timeout: float,
                 connect_timeout: float, max_connections: int = 16, max_idle: int = 8) -> None:
        self.base_url = base_url
        self.client = httpx.AsyncClient(
            base_url=base_url, headers=dict(headers),
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_idle),
            # a TLS context (the CA bundle: ~6 MiB) only for https
            verify=ssl_context() if base_url.startswith("https://") else False)

    async def request(self, method: str, path: str, *, content: bytes = b"",
                      headers: Mapping[str, str] | None = None,
                      timeout: float | None = None, lines: Lines | None = None) -> Response:
        try:
            async with self.client.stream(
                    method, path, content=content, headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
            ) as reply:
                if lines is not None and 200 <= reply.status_code < 300:
                    async for line in reply.aiter_lines():
                        if line.strip():
                            await lines(line.encode())
                    return Response(reply.status_code, dict(reply.headers), b"", True)
                await reply.aread()
        except httpx.ConnectError as exc:
            raise ConnectError(f"cannot connect to {self.base_url}: {exc!r}") from exc
        except httpx.TimeoutException as exc:
            raise RequestTimeout(f"{method} {self.base_url}{path}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise TransportError(f"{self.base_url}: {exc!r}") from exc
        return Response(reply.status_code, dict(reply.headers), reply.content, True)

    async def aclose(self) -> None:
        await self.client.aclose()
