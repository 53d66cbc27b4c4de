"""uvicorn's httptools protocol, with a response's head and its first body part sent together.

uvicorn writes a response's head to the socket when the app sends ``http.response.start`` and
the body when it sends ``http.response.body``: two ``send`` calls and, on loopback, two TCP
segments. A client waiting for the response is woken by the head, finds no body yet, sleeps,
and is woken again by the body: every response costs the client one more wake-up and the API
one more system call: per run of the latency benchmark (four responses) about five context
switches and 0.1 ms of CPU of the whole machine (docs/benchmarks.md, "Where the time goes").

Here the head waits for the next write, and the two leave in one ``send``. Should nothing
follow in the same turn of the event loop (a streamed response whose first part takes time,
``HEAD``, a ``100 Continue``), the head leaves on its own at the loop's next turn: never
later than that, and always before anything written after it.

``trigger api``, ``trigger dev`` and the tests' API serve with it (uvicorn's ``http=``:
``worker.api.http_protocol:HttpToolsProtocol``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http import httptools_impl

#: what uvicorn's ``http=`` setting takes to serve with this protocol
NAME = "worker.api.http_protocol:HttpToolsProtocol"


class _HeadWithBody:
    """The connection's transport for uvicorn, holding a response head until the next write
    (see the module's docstring); everything else is the transport's own."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(b"".join((held, data)))
        elif data[:5] == b"HTTP/":  # uvicorn writes a head (the status line on) in one piece
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class HttpToolsProtocol(httptools_impl.HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = _HeadWithBody(transport, self.loop)  # type: ignore[assignment]
