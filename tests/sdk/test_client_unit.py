"""Pure parts of the client: option mapping, body encoding, run parsing, fork and config rules."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from typing import Any

import orjson
import pytest

import worker
from worker.sdk import client, transport, trigger_options
from worker.sdk.definitions import Queue
from worker.sdk.errors import ConfigurationError
from worker.sdk.runs import Run
from worker.sdk.trigger_options import split_item


def test_wire_options_are_camel_case() -> None:
    assert trigger_options.wire_options({
        "idempotency_key": "k", "idempotency_key_ttl": 3600, "delay": "1h", "ttl": 60,
        "tags": "one", "priority": 10, "queue": Queue("q", 2), "concurrency_key": "c",
        "max_attempts": 2, "max_duration": 30, "machine": "micro", "metadata": {"a": 1},
        "version": "20240101.1",
    }) == {
        "idempotencyKey": "k", "idempotencyKeyTTL": "3600s", "delay": "1h", "ttl": 60,
        "tags": ["one"], "priority": 10, "queue": "q", "concurrencyKey": "c",
        "maxAttempts": 2, "maxDuration": 30, "machine": "micro", "metadata": {"a": 1},
        "lockToVersion": "20240101.1",
    }


def test_wire_options_durations_and_errors() -> None:
    when = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert trigger_options.wire_options({"delay": when}) == {"delay": "2030-01-01T00:00:00+00:00"}
    assert trigger_options.wire_options({"delay": dt.timedelta(minutes=2)}) == {"delay": "120s"}
    assert trigger_options.wire_options({"ttl": None}) == {}
    with pytest.raises(TypeError, match="unknown trigger option 'dealy'"):
        trigger_options.wire_options({"dealy": "1h"})
    with pytest.raises(TypeError, match="metadata"):
        trigger_options.wire_options({"metadata": [1]})


def test_payload_encoding() -> None:
    body = orjson.loads(transport.encode_json(transport.payload_members({"a": 1})))
    assert body == {"payload": {"a": 1}}
    body = orjson.loads(transport.encode_json(transport.payload_members(dt.date(2020, 1, 1))))
    assert body["payloadType"] == "application/super+json"
    assert isinstance(body["payload"], str)


def test_batch_items_split() -> None:
    assert split_item({"payload": 1, "options": {"tags": ["x"]}}) == (1, {"tags": ["x"]})
    assert split_item({"payload": 1}) == (1, {})
    assert split_item({"payload": 1, "other": 2}) == ({"payload": 1, "other": 2}, {})
    assert split_item([1]) == ([1], {})


def test_run_from_api_decodes_output_and_times() -> None:
    from worker.common.serialization import dumps

    output, output_type = dumps({"at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)})
    run = Run.from_api({
        "id": "run_1", "status": "COMPLETED", "taskIdentifier": "t", "payload": {"a": 1},
        "payloadType": "application/json", "output": output, "outputType": output_type,
        "attemptCount": 2, "createdAt": "2024-01-01T00:00:00+00:00", "tags": ["x"],
    })
    assert run.output == {"at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC)}
    assert run.payload == {"a": 1}
    assert run.task_identifier == "t" and run.attempt_count == 2
    assert run.created_at == dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert run.is_completed and run.is_success and not run.is_failed
    assert Run.from_api({"id": "r", "status": "CRASHED"}).is_failed
    assert Run.from_api({"id": "r", "status": "DELAYED"}).is_queued


async def test_missing_secret_key_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIGGER_SECRET_KEY", raising=False)
    monkeypatch.setitem(client._settings, "secret_key", None)
    client._clients.clear()
    with pytest.raises(ConfigurationError, match="TRIGGER_SECRET_KEY"):
        await client.trigger("hello-world", {})


async def test_client_is_recreated_after_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(client._settings, "secret_key", "tr_dev_x")
    first = client._client()
    assert client._client() is first
    monkeypatch.setattr(transport.default, "pid", -1)  # what a forked child sees
    assert client._client() is not first
    client._clients.clear()


def test_import_worker_is_light() -> None:
    code = (
        "import sys, worker; "
        "bad = [m for m in ('httpx', 'fastapi', 'psycopg', 'pydantic', 'asyncio', "
        "'worker.engine', 'worker.api') if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "[]"


def test_public_surface() -> None:
    names: list[Any] = [worker.task, worker.schema_task, worker.queue, worker.logger,
                        worker.tasks, worker.runs, worker.batch, worker.define_config,
                        worker.configure, worker.AbortTaskRunError, worker.ApiError]
    assert all(names)
    with pytest.raises(AttributeError):
        worker.nope  # noqa: B018


def test_batch_trigger_and_wait_result_is_iterable_in_item_order() -> None:
    from worker.sdk.subtasks import BatchResult, SubtaskUnwrapError, TaskRunResult

    result = BatchResult("batch_1", [TaskRunResult(True, "run_a", "t", output=1),
                                     TaskRunResult(False, "run_b", "t", error={"message": "x"})])
    assert [r.id for r in result] == ["run_a", "run_b"] and len(result) == 2
    assert result[0].output == 1 and not result[1].ok
    with pytest.raises(SubtaskUnwrapError):
        result.unwrap()
