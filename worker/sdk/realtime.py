"""Realtime: subscribe to runs (SSE) and write / read run streams.

``runs.subscribe_to_run(id)``, ``runs.subscribe_to_runs_with_tag(tag)`` and
``runs.subscribe_to_batch(id)`` are async iterators of :class:`~worker.sdk.runs.Run` snapshots:
the current state first, then one per change (status, metadata, output), in order. They end
when the run (every run of the batch) is final; a tag subscription runs until you stop
iterating unless ``stop_when_finished=True``.

Streams: inside a task, ``await streams.pipe("llm", tokens)`` sends each item of an (async)
iterable to the run's stream ``llm`` as it comes; ``streams.read(run_id, "llm")`` yields every
chunk from the start, then live ones, and ends when the writer finished (or the run did).

Every reader takes ``access_token=`` to use a public access token instead of the secret key.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

import orjson

from worker.sdk import client
from worker.sdk.context import current_context
from worker.sdk.errors import ApiError

if TYPE_CHECKING:
    from worker.sdk.runs import Run

RECONNECTS = 3
#: how long a pipe waits to batch chunks into one request (lower = lower latency)
PIPE_LINGER_SECONDS = 0.05
PIPE_MAX_BATCH = 256


async def sse_events(
    path: str,
    params: dict[str, str] | None = None,
    access_token: str | None = None,
    last_event_id: str | None = None,
) -> AsyncIterator[tuple[str, str, str | None]]:
    """``(event, data, id)`` from an SSE endpoint; reconnects (with Last-Event-ID) on drops."""
    import httpx

    attempts = 0
    while True:
        headers = {"accept": "text/event-stream"}
        if access_token:
            headers["authorization"] = f"Bearer {access_token}"
        if last_event_id:
            headers["last-event-id"] = last_event_id
        try:
            async with client._client().stream(
                "GET",
                path,
                params=params,
                headers=headers,
                timeout=httpx.Timeout(10.0, read=60.0),
            ) as response:
                if response.status_code >= 400:
                    await response.aread()
                    client._raise_for(response)
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


async def _runs(
    path: str, params: dict[str, str] | None, access_token: str | None
) -> AsyncIterator[Run]:
    from worker.sdk.runs import Run

    async for event, data, _ in sse_events(path, params, access_token):
        if event == "run":
            yield Run.from_api(orjson.loads(data))


def _id(value: Any) -> str:
    return (
        value
        if isinstance(value, str)
        else (getattr(value, "id", None) or getattr(value, "batch_id", None) or "")
    )


def subscribe_to_run(run: Any, *, access_token: str | None = None) -> AsyncIterator[Run]:
    return _runs(f"/realtime/v1/runs/{client.path_segment(_id(run))}", None, access_token)


def subscribe_to_runs_with_tag(
    tag: str, *, stop_when_finished: bool = False, access_token: str | None = None
) -> AsyncIterator[Run]:
    params = {"tags": tag}
    if stop_when_finished:
        params["stopWhenFinished"] = "true"
    return _runs("/realtime/v1/runs", params, access_token)


def subscribe_to_batch(batch: Any, *, access_token: str | None = None) -> AsyncIterator[Run]:
    return _runs(f"/realtime/v1/batches/{client.path_segment(_id(batch))}", None, access_token)


# --- streams -------------------------------------------------------------------------------


def _current_run_id(run_id: str | None) -> str:
    if run_id:
        return run_id
    ctx = current_context()
    found = ctx.to_dict().get("run", {}).get("id") if ctx is not None else None
    if not found:
        raise RuntimeError("streams.pipe/append outside a run need run_id=")
    return str(found)


async def _post(run_id: str, key: str, chunks: list[Any], done: bool) -> int:
    path = f"/realtime/v1/streams/{client.path_segment(run_id)}/{client.path_segment(key)}"
    body = orjson.dumps({"chunks": chunks, "done": done})
    response = await client.request("POST", path, content=body)
    return int(response.json()["seq"])


async def _aiter(source: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
    else:
        for item in source:
            yield item


class Streams:
    """The ``streams`` namespace."""

    async def append(self, key: str, value: Any, *, run_id: str | None = None) -> None:
        await _post(_current_run_id(run_id), key, [value], False)

    async def close(self, key: str, *, run_id: str | None = None) -> None:
        await _post(_current_run_id(run_id), key, [], True)

    async def pipe(
        self, key: str, source: AsyncIterable[Any] | Iterable[Any], *, run_id: str | None = None
    ) -> int:
        """Send every item of ``source`` (JSON values) to the stream as it is produced, then
        close the stream. Items produced close together travel in one request. Returns the
        number of items sent."""
        target = _current_run_id(run_id)
        queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

        async def sender() -> None:
            done = False
            while not done:
                end, item = await queue.get()
                batch: list[Any] = [] if end else [item]
                done = end
                deadline = time.monotonic() + PIPE_LINGER_SECONDS
                while not done and len(batch) < PIPE_MAX_BATCH:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        end, item = await asyncio.wait_for(queue.get(), left)
                    except TimeoutError:
                        break
                    if end:
                        done = True
                    else:
                        batch.append(item)
                await _post(target, key, batch, done)

        task = asyncio.get_running_loop().create_task(sender())
        count = 0
        try:
            async for item in _aiter(source):
                orjson.dumps(item)  # fail here, in the task, on a value that is not JSON
                queue.put_nowait((False, item))
                count += 1
                if task.done():
                    break
            queue.put_nowait((True, None))
            await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return count

    async def read(
        self, run: Any, key: str, *, access_token: str | None = None, after: int = 0
    ) -> AsyncIterator[Any]:
        """Every chunk of the run's stream from the start (or after seq ``after``), then live
        ones, decoded from JSON; ends when the stream is closed or the run finished."""
        path = f"/realtime/v1/streams/{client.path_segment(_id(run))}/{client.path_segment(key)}"
        async for event, data, _ in sse_events(
            path, None, access_token, str(after) if after else None
        ):
            if event == "chunk":
                yield orjson.loads(data)


streams = Streams()
