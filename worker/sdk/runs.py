"""``runs``: retrieve, list, cancel, replay, reschedule and poll runs
(docs/triggerdev-semantics.md, "Runs").

The API answers in camelCase (``taskIdentifier``, ``attemptCount``); :class:`Run` exposes
snake_case attributes, timestamps as ``datetime`` and ``payload``/``output`` decoded with the
serialiser (so a datetime returned by a task comes back a datetime).
"""

from __future__ import annotations

import asyncio
import builtins
import datetime as dt
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from worker.common.serialization import JSON, loads
from worker.common.statuses import API_FINAL_STATUSES
from worker.sdk import client
from worker.sdk.client import RunHandle, path_segment
from worker.sdk.pagination import Page, PageList

#: the longest one ``waitMs`` long-poll may wait (the API caps it there too)
MAX_WAIT_S = 60.0

QUEUED_STATUSES = frozenset({"QUEUED", "PENDING_VERSION", "DELAYED"})
EXECUTING_STATUSES = frozenset({"EXECUTING", "DEQUEUED"})
FAILED_STATUSES = frozenset({"FAILED", "CRASHED", "SYSTEM_FAILURE", "EXPIRED", "TIMED_OUT"})


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else None


def _decode(data: dict[str, Any], key: str) -> Any:
    value = data.get(key)
    data_type = data.get(f"{key}Type") or JSON
    raw = data.get(f"raw{key.capitalize()}")  # the typed packet beside its JSON view
    if isinstance(raw, str) and data_type != JSON:
        return loads(raw, data_type)
    if data_type == JSON or not isinstance(value, str):
        return value
    return loads(value, data_type)


@dataclass
class Run:
    """A run as the API reports it. ``raw`` keeps the whole camelCase object."""

    id: str
    status: str
    task_identifier: str
    payload: Any = None
    output: Any = None
    error: dict[str, Any] | None = None
    attempt_count: int = 0
    tags: list[str] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    idempotency_key: str | None = None
    version: str | None = None
    is_test: bool = False
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    delayed_until: dt.datetime | None = None
    expired_at: dt.datetime | None = None
    ttl: str | None = None
    batch_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Run:
        return cls(
            id=data["id"],
            status=data["status"],
            task_identifier=data.get("taskIdentifier", ""),
            payload=_decode(data, "payload"),
            output=_decode(data, "output"),
            error=data.get("error"),
            attempt_count=int(data.get("attemptCount") or 0),
            tags=list(data.get("tags") or []),
            metadata=data.get("metadata"),
            idempotency_key=data.get("idempotencyKey"),
            version=data.get("version"),
            is_test=bool(data.get("isTest", False)),
            created_at=_time(data.get("createdAt")),
            updated_at=_time(data.get("updatedAt")),
            started_at=_time(data.get("startedAt")),
            finished_at=_time(data.get("finishedAt")),
            delayed_until=_time(data.get("delayedUntil")),
            expired_at=_time(data.get("expiredAt")),
            ttl=data.get("ttl"),
            batch_id=(data.get("batch") or {}).get("id") or data.get("batchId"),
            raw=data,
        )

    @property
    def is_queued(self) -> bool:
        return self.status in QUEUED_STATUSES

    @property
    def is_executing(self) -> bool:
        return self.status in EXECUTING_STATUSES

    @property
    def is_waiting(self) -> bool:
        return self.status == "WAITING"

    @property
    def is_completed(self) -> bool:
        return self.status in API_FINAL_STATUSES

    @property
    def is_success(self) -> bool:
        return self.status == "COMPLETED"

    @property
    def is_failed(self) -> bool:
        return self.status in FAILED_STATUSES

    @property
    def is_canceled(self) -> bool:
        return self.status == "CANCELED"


class RunPage(Page[Run]):
    """One page of :meth:`Runs.list`; ``next_cursor`` is None on the last page."""

    @property
    def next_cursor(self) -> str | None:
        return str(self.next) if self.next is not None else None


def _run_id(run: str | RunHandle | Run) -> str:
    return run if isinstance(run, str) else run.id


class RunList(PageList[Run]):
    """``await runs.list(...)`` is the first page; ``async for run in runs.list(...)`` walks
    every page (newest first); ``.pages()`` yields page by page (worker.sdk.pagination)."""

    def __init__(self, params: dict[str, str], limit: int | None) -> None:
        async def fetch(cursor: str | None) -> Page[Run]:
            query = dict(params)
            if cursor:
                query["page[after]"] = cursor
            response = await client.request("GET", "/api/v1/runs", params=query)
            body = response.json()
            runs = [Run.from_api(item) for item in body.get("data", [])]
            return RunPage(runs, (body.get("pagination") or {}).get("next") or None)

        super().__init__(fetch, params.pop("page[after]", None), limit)


class Runs:
    """The ``runs`` namespace (async). ``worker.sync.runs`` mirrors it for blocking code."""

    async def retrieve(self, run: str | RunHandle | Run) -> Run:
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

    async def retrieve_trace(self, run: str | RunHandle | Run) -> dict[str, Any]:
        """The run's trace (``{"traceId", "rootSpan": {...}}``, docs/api.md "Traces")."""
        response = await client.request(
            "GET", f"/api/v1/runs/{path_segment(_run_id(run))}/trace")
        return dict(response.json()["trace"])

    async def logs(self, run: str | RunHandle | Run, *, level: str | None = None,
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
            page = (await client.request(
                "GET", f"/api/v1/runs/{path_segment(_run_id(run))}/logs", params=params)).json()
            found += page["data"]
            cursor = page["pagination"]["next"]
            if not cursor:
                break
        return found

    async def cancel(self, run: str | RunHandle | Run) -> str:
        """Cancel a run (and its in-progress children). Canceling a finished run is a no-op."""
        run_id = _run_id(run)
        await client.request("POST", f"/api/v2/runs/{path_segment(run_id)}/cancel")
        return run_id

    async def replay(self, run: str | RunHandle | Run) -> RunHandle:
        """Start a new run of the same task with the same payload; return its handle."""
        response = await client.request(
            "POST", f"/api/v1/runs/{path_segment(_run_id(run))}/replay", content=b"{}"
        )
        data = response.json()
        return RunHandle(id=data["id"], task_identifier=data.get("taskIdentifier", ""))

    async def reschedule(self, run: str | RunHandle | Run, delay: Any) -> Run:
        """Move a DELAYED run's start (``"1h"``, seconds, timedelta or datetime)."""
        body = orjson.dumps({"delay": client.wire_options({"delay": delay})["delay"]})
        response = await client.request(
            "POST", f"/api/v1/runs/{path_segment(_run_id(run))}/reschedule", content=body
        )
        return Run.from_api(response.json())

    async def poll(
        self,
        run: str | RunHandle | Run,
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
        longest = max(0.0, min(MAX_WAIT_S, client.request_timeout() - 2.0))
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
        response = await client.request("GET", f"/api/v3/runs/{path_segment(run_id)}",
                                        params=params)
        return Run.from_api(response.json())

    # --- realtime (worker.sdk.realtime): async iterators of Run snapshots ------------------

    def subscribe_to_run(
        self, run: str | RunHandle | Run, *, access_token: str | None = None
    ) -> AsyncIterator[Run]:
        """The run now, then at every change (status, metadata, output); ends when final."""
        from worker.sdk import realtime

        return realtime.subscribe_to_run(_run_id(run), access_token=access_token)

    def subscribe_to_runs_with_tag(
        self, tag: str, *, stop_when_finished: bool = False, access_token: str | None = None
    ) -> AsyncIterator[Run]:
        from worker.sdk import realtime

        return realtime.subscribe_to_runs_with_tag(
            tag, stop_when_finished=stop_when_finished, access_token=access_token
        )

    def subscribe_to_batch(
        self, batch: Any, *, access_token: str | None = None
    ) -> AsyncIterator[Run]:
        """Every run of the batch, then every change; ends when all are final."""
        from worker.sdk import realtime

        return realtime.subscribe_to_batch(batch, access_token=access_token)


runs = Runs()
