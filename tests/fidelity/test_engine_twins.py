"""Trigger.dev v4 twins that touch the engine, through the real API and a real worker process:
batches by task, ``tasks.batch_trigger_and_wait``, ``tasks.trigger_and_poll``, ``tags.add``,
``metadata.stream`` as an iterator, schema 422s, trigger-scoped public tokens with
``auth.with_auth``, ``runs.replay``'s handle, ``ai.tool``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import ApiServer
from tests.e2e.conftest import Project, WorkerProcess, make_project, start_worker, wait_for
from worker import ai, auth, batch, configure, runs, streams, tasks
from worker.sdk import client
from worker.sdk.errors import ApiError, AuthenticationError

TASKS = """
import dataclasses

from worker import batch, metadata, schema_task, tags, task, tasks


@task(id="double")
async def double(payload, ctx):
    if payload < 0:
        raise ValueError("negative")
    return payload * 2


@task(id="fan-out")
async def fan_out(payload, ctx):
    by_task = await batch.trigger_by_task_and_wait(
        [{"task": double, "payload": 1}, {"task": double, "payload": 2}])
    by_id = await tasks.batch_trigger_and_wait("double", [3, -1])
    return {"by_task": [r.output for r in by_task.runs],
            "by_id": [r.output if r.ok else "failed" for r in by_id.runs]}


@task(id="tagger")
async def tagger(payload, ctx):
    first = await tags.add("added-1")
    both = await tags.add(["added-1", "added-2"])
    over = await tags.add([f"x{i}" for i in range(20)])  # logged and ignored, as in Trigger.dev
    return {"first": first, "both": both, "over": over}


async def tokens():
    for word in ["Hello", " ", "world"]:
        yield {"text": word}


@task(id="streamer")
async def streamer(payload, ctx):
    stream = await metadata.stream("openai", tokens())
    seen = [chunk["text"] async for chunk in stream]
    return {"seen": seen, "count": await stream}


@dataclasses.dataclass
class Weather:
    city: str
    days: int = 1


@schema_task(id="get-weather", schema=Weather, description="Forecast for a city")
async def get_weather(payload, ctx):
    return {"city": payload.city, "days": payload.days, "sunny": True}


@task(id="tool-user")
async def tool_user(payload, ctx):
    from worker import ai
    return await ai.tool(get_weather).call('{"city": "Oslo", "days": 2}')
"""


def run_logs(project: Project, run_id: str) -> list[str]:
    """The run's log messages as the engine stored them."""
    with psycopg.connect(project.api.database_url) as conn:
        rows = conn.execute("SELECT message FROM run_logs WHERE run_id = %s ORDER BY id",
                            (run_id,)).fetchall()
    return [str(r[0]) for r in rows]


@pytest.fixture(scope="module")
def project(
    api_server: ApiServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    project = make_project(tmp_path_factory.mktemp("fidelity"), api_server, {"tasks.py": TASKS})
    worker: WorkerProcess = start_worker(project, concurrency=4)
    try:
        yield project
    finally:
        worker.stop()


@pytest.fixture
def sdk(project: Project) -> Iterator[Project]:
    saved = dict(client._settings)
    configure(api_url=project.api.url, secret_key=project.key)
    yield project
    client._settings.update(saved)
    client._clients.clear()


async def test_batch_by_task_and_batch_trigger_and_wait(sdk: Project) -> None:
    run = await tasks.trigger_and_poll("fan-out", None, poll_interval_ms=100, timeout=60)
    assert run.status == "COMPLETED", run
    assert run.output == {"by_task": [2, 4], "by_id": [6, "failed"]}

    from worker.sdk.task import Task

    handle = await batch.trigger_by_task(
        [{"task": Task(id="double", run=lambda p: p), "payload": 5}, {"task": "double",
                                                                     "payload": 6}])
    finished = [await runs.poll(r, poll_interval=0.1, timeout=60) for r in handle.runs]
    assert [r.output for r in finished] == [10, 12]
    assert {r.task_identifier for r in finished} == {"double"}


async def test_tags_add_inside_a_run(sdk: Project) -> None:
    run = await tasks.trigger_and_poll("tagger", None, tags=["given"], poll_interval_ms=100,
                                       timeout=60)
    assert run.status == "COMPLETED", run
    assert run.output["first"] == ["given", "added-1"]
    assert run.output["both"] == ["given", "added-1", "added-2"]
    assert run.output["over"] is None
    assert (await runs.retrieve(run.id)).tags == ["given", "added-1", "added-2"]
    wait_for(lambda: any("tags.add ignored" in m and "at most 10 tags" in m
                         for m in run_logs(sdk, run.id)), what="the ignored tags.add log")


async def test_metadata_stream_returns_the_chunks_as_piped(sdk: Project) -> None:
    run = await tasks.trigger_and_poll("streamer", None, poll_interval_ms=100, timeout=60)
    assert run.status == "COMPLETED", run
    assert run.output == {"seen": ["Hello", " ", "world"], "count": 3}
    read = [chunk async for chunk in streams.read(run.id, "openai")]
    assert read == [{"text": "Hello"}, {"text": " "}, {"text": "world"}]


async def test_dataclass_schema_refused_at_trigger_time(sdk: Project) -> None:
    with pytest.raises(ApiError) as caught:
        await tasks.trigger("get-weather", {"days": 2})
    assert caught.value.status == 422 and "city" in str(caught.value)


async def test_trigger_public_token_triggers_one_task_once(sdk: Project) -> None:
    token = await auth.create_trigger_public_token("double")
    async with auth.with_auth(access_token=token):
        handle = await tasks.trigger("double", 21)
    assert (await runs.poll(handle, poll_interval=0.1, timeout=60)).output == 42
    async with auth.with_auth(access_token=token):
        with pytest.raises(AuthenticationError, match="already used"):
            await tasks.trigger("double", 1)

    many = await auth.create_trigger_public_token("double", multiple_use=True)
    for n in (1, 2):
        handle = await auth.with_auth({"access_token": many},
                                      lambda n=n: tasks.trigger("double", n))
        assert handle.id.startswith("run_")
    async with auth.with_auth(access_token=many):
        with pytest.raises(ApiError) as caught:
            await tasks.trigger("fan-out", None)  # not the task the token names
        assert caught.value.status == 403
        with pytest.raises(ApiError) as caught:
            await runs.retrieve(handle.id)  # a trigger token reads nothing
        assert caught.value.status in (401, 403)
        # nor links a run to a parent it could then block, resume or write the journal of
        reply = await client._client().post(
            "/api/v1/tasks/double/trigger",
            json={"payload": 1, "options": {"parentRunId": handle.id, "journalSeq": 0}},
            headers={"authorization": f"Bearer {many}"})
        assert reply.status_code == 403 and "parentRunId" in reply.text


async def test_batch_trigger_token_and_async_iterable_items(sdk: Project) -> None:
    token = await auth.create_batch_trigger_public_token("double")

    async def payloads():  # Trigger.dev also batches from async iterables
        for n in (7, 8):
            yield n

    async with auth.with_auth(access_token=token):
        handle = await tasks.batch_trigger("double", payloads())
        with pytest.raises(AuthenticationError, match="already used"):
            await tasks.batch_trigger("double", [1])
    assert handle.run_count == 2
    finished = [await runs.poll(r, poll_interval=0.1, timeout=60) for r in handle.runs]
    assert [r.output for r in finished] == [14, 16]
    many = await auth.create_batch_trigger_public_token("double", multiple_use=True)
    async with auth.with_auth(access_token=many):
        with pytest.raises(ApiError) as caught:
            await tasks.trigger("double", 1)  # a batch token does not trigger one run
        assert caught.value.status == 403


async def test_trigger_and_subscribe_and_defined_streams(sdk: Project) -> None:
    from pydantic import BaseModel

    from worker.sdk.task import Task

    class Token(BaseModel):
        text: str

    streamer = Task(id="streamer", run=lambda payload: None)
    snapshots = [run async for run in streamer.trigger_and_subscribe(None)]
    assert snapshots[-1].status == "COMPLETED" and snapshots[-1].output["count"] == 3
    openai = streams.define("openai", schema=Token)
    assert [c async for c in openai.read(snapshots[-1].id)] == [
        Token(text="Hello"), Token(text=" "), Token(text="world")]


async def test_replay_handle_names_the_task(sdk: Project) -> None:
    configure(base_url=sdk.api.url, access_token=sdk.key)  # Trigger.dev's names
    handle = await tasks.trigger("double", 4)
    replayed = await runs.replay(handle)
    assert replayed.id != handle.id and replayed.task_identifier == "double"


async def test_ai_tool_formats_and_calls(sdk: Project) -> None:
    from worker.runtime.discovery import discover

    found = discover(Path(sdk.dir))
    tool = ai.tool(found.tasks["get-weather"])
    schema = tool.parameters
    assert schema["required"] == ["city"] and schema["properties"]["days"]["default"] == 1
    assert tool.openai() == {"type": "function", "function": {
        "name": "get-weather", "description": "Forecast for a city", "parameters": schema}}
    assert tool.anthropic() == {"name": "get-weather", "description": "Forecast for a city",
                                "input_schema": schema}
    # outside a run: trigger and poll; inside a run: trigger_and_wait
    assert await tool.call({"city": "Rome"}, poll_interval_ms=100, timeout=60) == {
        "city": "Rome", "days": 1, "sunny": True}
    run = await tasks.trigger_and_poll("tool-user", None, poll_interval_ms=100, timeout=60)
    assert run.status == "COMPLETED" and run.output == {"city": "Oslo", "days": 2, "sunny": True}




async def test_subscription_with_typed_streams(sdk: Project) -> None:
    from pydantic import BaseModel

    class Token(BaseModel):
        text: str

    handle = await tasks.trigger("streamer", None)
    parts = [p async for p in runs.subscribe_to_run(handle).with_streams({"openai": Token})]
    chunks = [p.chunk for p in parts if p.type == "openai"]
    assert chunks == [Token(text="Hello"), Token(text=" "), Token(text="world")]
    snapshots = [p.run for p in parts if p.type == "run"]
    assert snapshots and snapshots[-1] is not None and snapshots[-1].status == "COMPLETED"
    assert snapshots[-1].output == {"seen": ["Hello", " ", "world"], "count": 3}
