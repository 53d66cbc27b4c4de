"""``trigger worker``'s check, before it starts, that the API answers and accepts the key.

One ``GET`` over a plain socket, reading only the status line. httpx (with httpcore, anyio and,
when installed, trio: ~5 MiB of the supervisor's memory) and the TLS context every
``httpx.get`` builds are not worth one status code; the supervisor's own client to the API is
its business (worker/runtime/api_client.py). Proxies are not used, as by that client.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

#: the status line must arrive within this many bytes
_MAX_LINE = 8192


def get_status(url: str, path: str, key: str, timeout: float) -> int:
    """The HTTP status of ``GET {url}{path}`` with ``key`` as the bearer token.

    Raises ``OSError`` (refused, unreachable, timed out, TLS failure) when no HTTP answer came.
    """
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or "localhost"
    port = parts.port or (443 if https else 80)
    target = parts.path.rstrip("/") + path
    default_port = port == (443 if https else 80)
    authority = (f"[{host}]" if ":" in host else host) + ("" if default_port else f":{port}")
    request = (f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {key}\r\n"
               "User-Agent: trigger-worker\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=timeout) as raw:
        sock = raw
        if https:
            from worker.sdk.tls import ssl_context  # the SDK's CA bundle

            sock = ssl_context().wrap_socket(raw, server_hostname=host)
        with sock:
            sock.sendall(request)
            head = b""
            while b"\r\n" not in head and len(head) < _MAX_LINE:
                chunk = sock.recv(1024)
                if not chunk:
                    break
                head += chunk
    line = head.split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[0].startswith(b"HTTP/") or not line[1].isdigit():
        raise ConnectionError(f"not an HTTP answer from {url}: {head[:80]!r}")
    return int(line[1])
