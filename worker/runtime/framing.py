"""Length-prefixed orjson frames between the supervisor and its executors (unix socket).

A frame is a 4-byte big-endian length followed by that many bytes of orjson. The executor side
is blocking (plain socket, one run at a time); the supervisor side is asyncio streams.
"""

from __future__ import annotations

import asyncio
import socket
import struct

import orjson

from worker.common.protocol import Wire

_HEADER = struct.Struct(">I")
#: the length prefix of a frame
HEADER = _HEADER
MAX_FRAME = 256 * 1024 * 1024


def _default(obj: object) -> object:
    # Log attributes may hold anything; never fail a frame because of one odd value.
    return repr(obj)


def encode(message: Wire) -> bytes:
    body = orjson.dumps(message, default=_default, option=orjson.OPT_NON_STR_KEYS)
    return _HEADER.pack(len(body)) + body


# --- blocking side (executor) ------------------------------------------------------------


def send_sync(sock: socket.socket, message: Wire) -> None:
    sock.sendall(encode(message))


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def recv_sync(sock: socket.socket) -> Wire | None:
    """Next frame, or None when the peer closed the connection."""
    header = _recv_exact(sock, _HEADER.size)
    if header is None:
        return None
    (length,) = _HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ValueError(f"frame of {length} bytes is too large")
    body = _recv_exact(sock, length)
    if body is None:
        return None
    result: Wire = orjson.loads(body)
    return result


# --- asyncio side (supervisor) -----------------------------------------------------------


async def read_frame(reader: asyncio.StreamReader) -> Wire | None:
    try:
        header = await reader.readexactly(_HEADER.size)
        (length,) = _HEADER.unpack(header)
        if length > MAX_FRAME:
            raise ValueError(f"frame of {length} bytes is too large")
        body = await reader.readexactly(length)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    result: Wire = orjson.loads(body)
    return result


def write_frame(writer: asyncio.StreamWriter, message: Wire) -> None:
    writer.write(encode(message))
