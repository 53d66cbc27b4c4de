"""Reading a server-sent-events endpoint of the API (the realtime routes, docs/api.md), with
reconnection from the last event id when the connection drops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx

from worker.sdk import transport
from worker.sdk.errors import ApiError

RECONNECTS = 3


async def sse_events(
    path: str,
    params: dict[str, str] | None = None,
    access_token: str | None = None,
    last_event_id: str | None = None,
) -> AsyncIterator[tuple[str, str, str | None]]:
    """``(event, data, id)`` from an SSE endpoint; reconnects (with Last-Event-ID) on drops."""
    attempts = 0
    while True:
        headers = {"accept": "text/event-stream"}
        if access_token:
            headers["authorization"] = f"Bearer {access_token}"
        if last_event_id:
            headers["last-event-id"] = last_event_id
        try:
            async with transport.default.http().stream(
                "GET",
                path,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(10.0, read=60.0),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    transport.raise_for(response)
                event, ident = "message", None
                data: list[str] = []
                async for line in response.aiter_lines():
                    if not line:
                        if data:
                            if ident is not None:
                                last_event_id = ident
                            yield event, "\n".join(data), ident
                            if event == "end":
                                return
                        event, data, ident = "message", [], None
                    elif line.startswith(":"):
                        continue
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        if name == "event":
                            event = value
                        elif name == "data":
                            data.append(value)
                        elif name == "id":
                            ident = value
                return  # the server closed the stream without "end"
        except (httpx.TransportError, httpx.StreamError) as exc:
            attempts += 1
            if attempts > RECONNECTS:
                raise ApiError(0, f"realtime connection to {path} lost: {exc!r}") from exc
            await asyncio.sleep(0.5 * attempts)
