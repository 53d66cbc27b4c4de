"""``runs``: retrieve, list, cancel, replay, reschedule and poll runs
(docs/triggerdev-semantics.md, "Runs").

The API answers in camelCase (``taskIdentifier``, ``attemptCount``); the runs come back as
:class:`~worker.sdk.run_models.Run` (worker/sdk/run_models.py).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import AsyncIterator, Iterable
from typing import Any

from worker.sdk import realtime, transport
from worker.sdk.pagination import Page, PageList
from worker.sdk.run_models import Run, RunPage
from worker.sdk.transport import path_segment
from worker.sdk.trigger_options import wire_options
from worker.sdk.triggering import RunHandle

#: the longest one ``waitMs`` long-poll may wait (the API caps it there too)
MAX_WAIT_S = 60.0

__all__ = ["Run", "RunPage", "Runs", "runs"]  # Run: ``from worker.sdk.runs import Run`` too


def _run_id(run: str | RunHandle[Any] | Run) -> str:
    return run if isinstance(run, str) else run.id


class RunList(PageList[Run]):
    """``await runs.list(...)`` is the first page; ``async for run in runs.list(...)`` walks
    every page (newest first); ``.pages()`` yields page by page (worker.sdk.pagination)."""

    def __init__(self, params: dict[str, str], limit: int | None) -> None:
        async def fetch(cursor: str | None) -> Page[Run]:
            query = dict(params)
            if cursor:
                query["page[after]"] = cursor
            response = await transport.request("GET", "/api/v1/runs", params=query)
            body = response.json()
            runs = [Run.from_api(item) for item in body.get("data", [])]
            return RunPage(runs, (body.get("pagination") or {}).get("next") or None)

        super().__init__(fetch, params.pop("page[after]", None), limit)


class Runs:
    """The ``runs`` namespace (async). ``worker.sync.runs`` mirrors it for blocking code."""

    async def retrieve(self, run: str | RunHandle[Any] | Run) -> Run:
        return await self._retrieve(_run_id(run), 0)

    def list(
        self,
        *,
        status: str | Iterable[str] | None = None,
        task_identifier: str | Iterable[str] | None = None,
        tag: str | Iterable[str] | None = None,
        version: str | None = None,
        batch: str | None = None,
        created_from: dt.datetime | None = None,
        created_to: dt.datetime | None = None,
        limit: int | None = None,
        page_size: int | None = None,
        after: str | None = None,
    ) -> RunList:
        """Newest first. ``limit`` caps the total yielded; ``page_size`` is the HTTP page size."""
        params: dict[str, str] = {}

        def put(name: str, value: str | Iterable[str] | None) -> None:
            if value is not None:
                params[name] = value if isinstance(value, str) else ",".join(value)

        put("filter[status]", status)
        put("filter[taskIdentifier]", task_identifier)
        put("filter[tag]", tag)
        put("filter[version]", version)
        put("filter[batch]", batch)
        if created_from is not None:
            params["filter[createdAt][from]"] = created_from.isoformat()
        if created_to is not None:
            params["filter[createdAt][to]"] = created_to.isoformat()
        size = page_size or (min(limit, 100) if limit else None)
        if size:
            params["page[size]"] = str(size)
        if after:
            params["page[after]"] = after
        return RunList(params, limit)

    async def retrieve_trace(self, run: str | RunHandle[Any] | Run) -> dict[str, Any]:
        """The run's trace (``{"traceId", "rootSpan": {...}}``, docs/api.md "Traces")."""
        response = await transport.request(
            "GET", f"/api/v1/runs/{path_segment(_run_id(run))}/trace")
        return dict(response.json()["trace"])

    async def logs(self, run: str | RunHandle[Any] | Run, *, level: str | None = None,
                   limit: int | None = None,
                   after: str | None = None) -> builtins.list[dict[str, Any]]:
        """The run's log lines in order (``level``: the lowest level returned, e.g. "warn");
        ``after``: a line id, to get only newer lines."""
        found: builtins.list[dict[str, Any]] = []
        cursor = after
        while limit is None or len(found) < limit:
            params = {"limit": str(min(1000, (limit or 1000) - len(found)))}
            if level:
                params["level"] = level
            if cursor:
                params["cursor"] = cursor
            page = (await transport.request(
                "GET", f"/api/v1/runs/{path_segment(_run_id(run))}/logs", params=params)).json()
            found += page["data"]
            cursor = page["pagination"]["next"]
            if not cursor:
                break
        return found

    async def cancel(self, run: str | RunHandle[Any] | Run) -> str:
        """Cancel a run (and its in-progress children). Canceling a finished run is a no-op."""
        run_id = _run_id(run)
        await transport.request("POST", f"/api/v2/runs/{path_segment(run_id)}/cancel")
        return run_id

    async def replay(self, run: str | RunHandle[Any] | Run) -> RunHandle[Any]:
        """Start a new run of the same task with the same payload; return its handle."""
        response = await transport.request(
            "POST", f"/api/v1/runs/{path_segment(_run_id(run))}/replay", json={}
        )
        data = response.json()
        return RunHandle(id=data["id"], task_identifier=data.get("taskIdentifier", ""))

    async def reschedule(self, run: str | RunHandle[Any] | Run, delay: object) -> Run:
        """Move a DELAYED run's start (``"1h"``, seconds, timedelta or datetime)."""
        body = {"delay": wire_options({"delay": delay})["delay"]}
        response = await transport.request(
            "POST", f"/api/v1/runs/{path_segment(_run_id(run))}/reschedule", json=body
        )
        return Run.from_api(response.json())

    async def poll(
        self,
        run: str | RunHandle[Any] | Run,
        poll_interval: float = 1.0,
        timeout: float | None = None,
    ) -> Run:
        """Wait until the run is final and return it; ``TimeoutError`` after ``timeout`` s.

        One long-poll at a time: ``GET /api/v3/runs/{id}?waitMs=N`` answers as soon as the
        run ends (the API is woken by the run's change notification, docs/api.md), so this
        returns when the run ends, not at the next tick of a timer. An API that ignores
        ``waitMs`` (Trigger.dev's) answers at once: then it retrieves the run every
        ``poll_interval`` s instead.
        """
        run_id = _run_id(run)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        # each long-poll ends well within one request's timeout
        longest = max(0.0, min(MAX_WAIT_S, transport.request_timeout() - 2.0))
        while True:
            wait = longest if deadline is None else max(0.0, min(longest,
                                                                deadline - loop.time()))
            asked = loop.time()
            current = await self._retrieve(run_id, wait)
            if current.is_completed:
                return current
            now = loop.time()
            if deadline is not None and now >= deadline:
                raise TimeoutError(f"run {run_id} still {current.status} after {timeout} s")
            if now - asked < wait / 2:  # the API did not wait: poll
                pause = poll_interval if deadline is None else min(poll_interval,
                                                                   deadline - now)
                await asyncio.sleep(max(pause, 0.0))

    async def _retrieve(self, run_id: str, wait: float) -> Run:
        params = {"waitMs": str(int(wait * 1000))} if wait > 0 else None
        response = await transport.request("GET", f"/api/v3/runs/{path_segment(run_id)}",
                                           params=params)
        return Run.from_api(response.json())

    # --- realtime (worker.sdk.realtime): async iterators of Run snapshots ------------------

    def subscribe_to_run(
        self, run: str | RunHandle[Any] | Run, *, access_token: str | None = None
    ) -> AsyncIterator[Run]:
        """The run now, then at every change (status, metadata, output); ends when final."""
        return realtime.subscribe_to_run(_run_id(run), access_token=access_token)

    def subscribe_to_runs_with_tag(
        self, tag: str, *, stop_when_finished: bool = False, access_token: str | None = None
    ) -> AsyncIterator[Run]:
        return realtime.subscribe_to_runs_with_tag(
            tag, stop_when_finished=stop_when_finished, access_token=access_token
        )

    def subscribe_to_batch(
        self, batch: object, *, access_token: str | None = None
    ) -> AsyncIterator[Run]:
        """Every run of the batch, then every change; ends when all are final."""
        return realtime.subscribe_to_batch(batch, access_token=access_token)


runs = Runs()
