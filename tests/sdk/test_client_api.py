"""The SDK client against the real API server (tests/conftest.py ``api_server``).

A ``ProtocolWorker`` (a minimal real client of the worker protocol) registers the task and
completes runs, so these tests need no executor processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import orjson
import pytest

from tests.protocol_worker import ProtocolWorker
from tests.sdk.conftest import TASK
from worker import batch, configure, runs, tasks
from worker.common.serialization import dumps
from worker.sdk import client, transport
from worker.sdk.errors import AuthenticationError, NotFoundError


async def test_trigger_and_retrieve_round_trips_payload(sdk: ProtocolWorker) -> None:
    payload = {"when": dt.datetime(2024, 1, 2, tzinfo=dt.UTC), "id": uuid.UUID(int=7),
               "price": Decimal("1.50"), "tags": {"a"}}
    handle = await tasks.trigger(TASK, payload, tags=["sdk-test"])
    assert handle.id.startswith("run_") and handle.task_identifier == TASK
    run = await runs.retrieve(handle)
    assert run.id == handle.id
    assert run.status == "QUEUED" and run.is_queued and not run.is_completed
    assert run.payload == payload
    assert run.tags == ["sdk-test"]

    plain = await tasks.trigger(TASK, {"n": 1})
    assert (await runs.retrieve(plain.id)).payload == {"n": 1}


async def test_idempotency_key_returns_the_same_run(sdk: ProtocolWorker) -> None:
    key = f"k-{uuid.uuid4()}"
    first = await tasks.trigger(TASK, {}, idempotency_key=key)
    second = await tasks.trigger(TASK, {}, idempotency_key=key)
    assert second.id == first.id and second.is_cached and not first.is_cached


async def test_request_idempotency_header_dedupes_http_retries(sdk: ProtocolWorker) -> None:
    body = {"payload": {"x": 1}, "options": {}}
    key = str(uuid.uuid4())
    one = await client.request("POST", f"/api/v1/tasks/{TASK}/trigger", json=body,
                               idempotency_key=key)
    two = await client.request("POST", f"/api/v1/tasks/{TASK}/trigger", json=body,
                               idempotency_key=key)
    assert one.json()["id"] == two.json()["id"]


async def test_list_filters_and_paginates(sdk: ProtocolWorker) -> None:
    tag = f"t-{uuid.uuid4().hex[:8]}"
    ids = {(await tasks.trigger(TASK, {"i": i}, tags=[tag])).id for i in range(5)}
    await tasks.trigger(TASK, {"other": True})
    listed = [r.id async for r in runs.list(tag=tag, page_size=2)]
    assert set(listed) == ids and len(listed) == 5
    pages = [p async for p in runs.list(tag=tag, page_size=2).pages()]
    assert [len(p.data) for p in pages] == [2, 2, 1]
    assert len([r async for r in runs.list(tag=tag, limit=3)]) == 3
    queued = [r async for r in runs.list(status="QUEUED", task_identifier=TASK, tag=tag)]
    assert len(queued) == 5


async def test_cancel_and_poll(sdk: ProtocolWorker) -> None:
    handle = await tasks.trigger(TASK, {})
    assert await runs.cancel(handle) == handle.id
    run = await runs.poll(handle, poll_interval=0.05, timeout=10)
    assert run.status == "CANCELED" and run.is_completed and run.is_canceled


async def test_poll_returns_decoded_output_of_a_completed_run(sdk: ProtocolWorker) -> None:
    handle = await tasks.trigger(TASK, {"n": 2})
    leased = await asyncio.to_thread(sdk.dequeue, 1, 5000)
    assert [r["run_id"] for r in leased] == [handle.id]
    output = {"done_at": dt.datetime(2024, 3, 4, 5, 6, tzinfo=dt.UTC), "total": Decimal("4")}
    data, data_type = dumps(output)
    await asyncio.to_thread(sdk.complete, leased[0], ok=True, output=data, output_type=data_type)
    run = await runs.poll(handle.id, poll_interval=0.05, timeout=10)
    assert run.is_success and run.output == output and run.attempt_count == 1


async def test_poll_timeout(sdk: ProtocolWorker) -> None:
    handle = await tasks.trigger(TASK, {})
    with pytest.raises(TimeoutError):
        await runs.poll(handle, poll_interval=0.05, timeout=0.2)


async def test_batch_trigger_and_retrieve(sdk: ProtocolWorker) -> None:
    handle = await tasks.batch_trigger(
        TASK, [{"i": 1}, {"payload": {"i": 2}, "options": {"tags": ["second"]}}], tags=["b"]
    )
    assert handle.run_count == 2 and handle.batch_id
    second = await runs.retrieve(handle.runs[1])
    assert second.payload == {"i": 2} and second.tags == ["second"]
    assert (await runs.retrieve(handle.runs[0])).tags == ["b"]
    retrieved = await batch.retrieve(handle.batch_id)
    assert retrieved.id == handle.batch_id
    assert retrieved.runs == [r.id for r in handle.runs]


async def test_errors_are_typed(sdk: ProtocolWorker, api_server: Any) -> None:
    with pytest.raises(NotFoundError):
        await runs.retrieve("run_doesnotexist")
    configure(secret_key="tr_dev_wrongwrongwrongwrongwrong")
    with pytest.raises(AuthenticationError):
        await tasks.trigger(TASK, {})


async def test_sync_mirror(sdk: ProtocolWorker) -> None:
    def blocking() -> tuple[str, str, int]:
        from worker import sync

        handle = sync.tasks.trigger(TASK, {"sync": True}, tags=["sync"])
        run = sync.runs.retrieve(handle)
        listed = list(sync.runs.list(tag="sync", limit=10))
        return handle.id, run.id, len(listed)

    handle_id, run_id, count = await asyncio.to_thread(blocking)
    assert handle_id == run_id and count >= 1

    from worker import sync

    with pytest.raises(RuntimeError, match="inside a running event loop"):
        sync.runs.retrieve("run_x")


def test_body_is_documented_wire_format() -> None:
    body = orjson.loads(transport.encode_json(transport.payload_members({"a": 1})))
    assert body == {"payload": {"a": 1}}


async def test_every_list_is_awaitable_and_async_iterable(sdk: ProtocolWorker) -> None:
    """One convention for lists (issue 12): ``await x.list()`` is a page, ``async for``
    walks every page."""
    from worker import queues, schedules

    tag = f"l-{uuid.uuid4().hex[:8]}"
    ids = [(await tasks.trigger(TASK, {"i": i}, tags=[tag])).id for i in range(3)]
    page = await runs.list(tag=tag, page_size=2)
    assert [r.id for r in page] == ids[::-1][:2] and len(page) == 2 and page.has_next_page
    rest = await page.next_page()
    assert rest is not None and [r.id for r in rest] == ids[:1] and not rest.has_next_page
    assert [r.id async for r in runs.list(tag=tag, page_size=2)] == ids[::-1]

    first = await schedules.list()
    assert first.data == [] and first.total_pages >= 1
    assert [s async for s in schedules.list()] == []
    names = [q["id"] for q in await queues.list()]
    assert f"task/{TASK}" in names
    assert f"task/{TASK}" in [q["id"] async for q in queues.list()]


async def test_poll_waits_on_the_run_not_on_a_timer(sdk: ProtocolWorker) -> None:
    """A run completed while ``poll`` waits is returned although the poll interval is far
    longer than the timeout: ``poll`` is woken by the run's change, not by a timer tick."""
    handle = await tasks.trigger(TASK, {"n": 3})

    async def complete_soon() -> None:
        leased = await asyncio.to_thread(sdk.dequeue, 1, 5000)
        await asyncio.sleep(0.3)  # poll is already waiting
        data, data_type = dumps({"ok": 1})
        await asyncio.to_thread(sdk.complete, leased[0], ok=True, output=data,
                                output_type=data_type)

    finisher = asyncio.ensure_future(complete_soon())
    run = await runs.poll(handle.id, poll_interval=60, timeout=20)
    await finisher
    assert run.is_success and run.output == {"ok": 1}
