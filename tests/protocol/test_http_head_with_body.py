"""The API's HTTP protocol (worker/api/http_protocol.py): a response's head and body leave in
one write; a head with no body right behind it still leaves at once. A real uvicorn server on a
real socket, the raw transport's writes counted under the protocol."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.conftest import free_port
from worker.api.http_protocol import HttpToolsProtocol

#: every write the protocol made to the socket's transport, in order
WRITES: list[bytes] = []


class _Counted:
    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        WRITES.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CountedProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_Counted(transport))  # type: ignore[arg-type]


async def _json(_: Request) -> Response:
    return JSONResponse({"ok": True, "pad": "x" * 300})


async def _slow_stream(_: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        await asyncio.sleep(1.0)
        yield b"late"

    return StreamingResponse(parts(), media_type="text/plain")


APP = Starlette(routes=[Route("/json", _json, methods=["GET", "HEAD"]),
                        Route("/slow", _slow_stream)])


@contextlib.asynccontextmanager
async def _server() -> AsyncIterator[int]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(APP, host="127.0.0.1", port=port,
                                           http=CountedProtocol, log_level="warning"))
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def _exchange(port: int, request: bytes) -> tuple[asyncio.StreamReader,
                                                         asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    return reader, writer


async def test_each_response_is_one_write_with_its_head_and_body() -> None:
    async with _server() as port:
        reader, writer = await _exchange(port, b"GET /json HTTP/1.1\r\nhost: t\r\n\r\n" * 3)
        for _ in range(3):  # three on one kept-alive connection, each whole
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            body = await reader.readexactly(length)
            assert body.startswith(b'{"ok":true')
        writer.close()
    responses = [w for w in WRITES if w.startswith(b"HTTP/1.1 200")]
    assert len(responses) == 3, WRITES
    assert all(w.endswith(b'"}') and b'{"ok":true' in w for w in responses), WRITES
    assert len(WRITES) == 3, WRITES  # nothing written on its own


async def test_a_head_with_no_body_behind_it_still_leaves_at_once() -> None:
    WRITES.clear()
    async with _server() as port:
        reader, writer = await _exchange(port, b"GET /slow HTTP/1.1\r\nhost: t\r\n\r\n")
        # the body comes a second later: the head is not held for it
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.5)
        assert head.startswith(b"HTTP/1.1 200")
        assert b"late" in await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), 5)
        writer.close()
        # HEAD: a head and no body at all
        reader, writer = await _exchange(port, b"HEAD /json HTTP/1.1\r\nhost: t\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 0.5)
        assert head.startswith(b"HTTP/1.1 200")
        writer.close()
