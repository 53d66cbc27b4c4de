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
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from worker.sdk import attempt_hooks, transport
from worker.sdk.context import current_context
from worker.sdk.logger import logger
from worker.sdk.run_models import Run
from worker.sdk.schemas import SchemaLike, adapt
from worker.sdk.sse import sse_events
from worker.sdk.transport import path_segment

#: how long a pipe waits to batch chunks into one request (lower = lower latency)
PIPE_LINGER_SECONDS = 0.05
PIPE_MAX_BATCH = 256


async def _runs(
    path: str, params: dict[str, str] | None, access_token: str | None
) -> AsyncIterator[Run]:
    async for event, data, _ in sse_events(path, params, access_token):
        if event == "run":
            yield Run.from_api(orjson.loads(data))


def _id(value: object) -> str:
    return (
        value
        if isinstance(value, str)
        else (getattr(value, "id", None) or getattr(value, "batch_id", None) or "")
    )


@dataclass(frozen=True)
class StreamPart:
    """One part of a subscription ``with_streams``: ``type`` is ``"run"`` (``run`` set) or the
    stream key (``chunk`` set, parsed by the stream's type when one was given)."""

    type: str
    run: Run | None = None
    chunk: Any = None


class RunSubscription:
    """``runs.subscribe_to_run(id)``: an async iterator of :class:`Run` snapshots;
    ``.with_streams("openai")`` (or ``{"openai": ChunkModel}`` for typed chunks) also yields the
    chunks of those streams, as Trigger.dev's ``subscribeToRun(id).withStreams()``."""

    def __init__(self, run_id: str, access_token: str | None) -> None:
        self.run_id, self.access_token = run_id, access_token
        self._snapshots: AsyncIterator[Run] | None = None

    def __aiter__(self) -> RunSubscription:
        return self

    async def __anext__(self) -> Run:
        if self._snapshots is None:
            self._snapshots = _runs(f"/realtime/v1/runs/{path_segment(self.run_id)}",
                                    None, self.access_token)
        return await self._snapshots.__anext__()

    async def aclose(self) -> None:
        """Stop the subscription (``contextlib.aclosing``): closes its HTTP stream."""
        if self._snapshots is not None and hasattr(self._snapshots, "aclose"):
            await self._snapshots.aclose()

    async def with_streams(self, *keys: Any) -> AsyncIterator[StreamPart]:
        types: dict[str, SchemaLike | None] = {}
        for key in keys:
            if isinstance(key, dict):
                types.update({k: adapt(v) if v is not None else None for k, v in key.items()})
            else:
                types[str(key)] = None
        if not types:
            raise ValueError("with_streams needs the stream keys: with_streams('openai')")
        parts: asyncio.Queue[StreamPart | BaseException | None] = asyncio.Queue()

        async def pump_run() -> None:
            async for run in self:
                parts.put_nowait(StreamPart("run", run=run))

        async def pump_stream(key: str, parse: SchemaLike | None) -> None:
            async for chunk in streams.read(self.run_id, key, access_token=self.access_token):
                parts.put_nowait(StreamPart(key, chunk=parse.model_validate(chunk)
                                            if parse is not None else chunk))

        async def guarded(coro: Awaitable[None]) -> None:
            try:
                await coro
            except BaseException as exc:  # handed to the reader, raised there
                parts.put_nowait(exc)
            finally:
                parts.put_nowait(None)

        pumps = [asyncio.ensure_future(guarded(pump_run()))]
        pumps += [asyncio.ensure_future(guarded(pump_stream(k, t))) for k, t in types.items()]
        running = len(pumps)
        try:
            while running:
                item = await parts.get()
                if item is None:
                    running -= 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield item
        finally:
            for pump in pumps:
                pump.cancel()


def subscribe_to_run(run: object, *, access_token: str | None = None) -> RunSubscription:
    return RunSubscription(_id(run), access_token)


def subscribe_to_runs_with_tag(
    tag: str, *, stop_when_finished: bool = False, access_token: str | None = None
) -> AsyncIterator[Run]:
    params = {"tags": tag}
    if stop_when_finished:
        params["stopWhenFinished"] = "true"
    return _runs("/realtime/v1/runs", params, access_token)


def subscribe_to_batch(batch: object, *, access_token: str | None = None) -> AsyncIterator[Run]:
    return _runs(f"/realtime/v1/batches/{path_segment(_id(batch))}", None, access_token)


# --- streams -------------------------------------------------------------------------------


def _current_run_id(run_id: str | None) -> str:
    if run_id:
        return run_id
    ctx = current_context()
    found = ctx.to_dict().get("run", {}).get("id") if ctx is not None else None
    if not found:
        raise RuntimeError("streams.pipe/append outside a run need run_id=")
    return str(found)


async def _post(run_id: str, key: str, chunks: list[object], done: bool) -> int:
    path = f"/realtime/v1/streams/{path_segment(run_id)}/{path_segment(key)}"
    data = await transport.json("POST", path, json={"chunks": chunks, "done": done})
    return int(data["seq"])


async def _aiter(source: AsyncIterable[Any] | Iterable[Any]) -> AsyncIterator[Any]:
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
    else:
        for item in source:
            yield item


class Streams:
    """The ``streams`` namespace."""

    def define(self, id: str, schema: object = None) -> StreamDefinition:
        return StreamDefinition(id, schema)

    async def append(self, key: str, value: object, *, run_id: str | None = None) -> None:
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
                batch: list[object] = [] if end else [item]
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
        self, run: object, key: str, *, access_token: str | None = None, after: int = 0
    ) -> AsyncIterator[Any]:
        """Every chunk of the run's stream from the start (or after seq ``after``), then live
        ones, decoded from JSON; ends when the stream is closed or the run finished."""
        path = f"/realtime/v1/streams/{path_segment(_id(run))}/{path_segment(key)}"
        async for event, data, _ in sse_events(
            path, None, access_token, str(after) if after else None
        ):
            if event == "chunk":
                yield orjson.loads(data)


streams = Streams()


class StreamDefinition:
    """``streams.define("llm")`` (Trigger.dev's ``streams.define<T>({id})``): the stream calls
    with the key bound; ``schema`` (any ``schema_task`` schema kind) parses read chunks."""

    def __init__(self, id: str, schema: object = None) -> None:
        self.id = id
        self.schema = adapt(schema) if schema is not None else None

    async def pipe(self, source: AsyncIterable[Any] | Iterable[Any], *,
                   run_id: str | None = None) -> int:
        return await streams.pipe(self.id, source, run_id=run_id)

    async def append(self, value: object, *, run_id: str | None = None) -> None:
        await streams.append(self.id, value, run_id=run_id)

    async def read(self, run: object, *, access_token: str | None = None,
                   after: int = 0) -> AsyncIterator[Any]:
        async for chunk in streams.read(run, self.id, access_token=access_token, after=after):
            yield self.schema.model_validate(chunk) if self.schema is not None else chunk


class PipedStream:
    """What ``metadata.stream(key, source)`` returns: the source is piped to the run's stream
    ``key`` in the background, and this yields the same chunks as they are piped, so Trigger.dev's
    ``for await (const chunk of stream)`` translates to ``async for chunk in stream``.

    ``await stream`` waits for the pipe to end and gives the number of chunks sent; an attempt
    also waits for its unfinished pipes before it completes (so nothing is cut off), and a pipe
    error is raised from the iteration / the ``await``.
    """

    def __init__(self, key: str, source: AsyncIterable[Any] | Iterable[Any],
                 run_id: str | None = None) -> None:
        self._chunks: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._pump(key, source, run_id))
        _pending.add(self._task)
        self._task.add_done_callback(_pending.discard)

    async def _pump(self, key: str, source: AsyncIterable[Any] | Iterable[Any],
                    run_id: str | None) -> int:
        async def tee() -> AsyncIterator[Any]:
            async for item in _aiter(source):
                self._chunks.put_nowait((False, item))
                yield item

        try:
            return await streams.pipe(key, tee(), run_id=run_id)
        finally:
            self._chunks.put_nowait((True, None))

    async def __aiter__(self) -> AsyncIterator[Any]:
        while True:
            end, item = await self._chunks.get()
            if end:
                break
            yield item
        await self._task  # the pipe's error, if it failed

    def __await__(self) -> Any:
        return self._task.__await__()


#: pipes started by metadata.stream that have not finished yet
_pending: set[asyncio.Task[int]] = set()


async def _settle_pipes(ctx: object) -> dict[str, object] | None:
    """At the end of an attempt: let unfinished pipes finish (their errors were or will be
    seen by the task; here they are only logged)."""
    for task in list(_pending):
        try:
            await task
        except Exception as exc:
            logger.error(f"metadata.stream pipe failed: {type(exc).__name__}: {exc}")
    return None


async def _before_checkpoint(ctx: object) -> None:
    """A checkpointing process completes nothing: finish the pipes before it stops."""
    await _settle_pipes(ctx)


attempt_hooks.on_attempt_end(_settle_pipes, busy=lambda: bool(_pending))
attempt_hooks.on_checkpoint(_before_checkpoint)
