"""The SDK transport's configuration and its one retry loop (shared with the worker protocol
client: tests/runtime/test_http1.py), and the task registry discovery reads."""

from __future__ import annotations

from typing import NoReturn

import httpx
import pytest

from worker.common.settings import SettingsError
from worker.sdk.http_retries import RetryPolicy, send_with_retries
from worker.sdk.settings import SdkSettings
from worker.sdk.task import created_tasks, task


def test_settings_from_environment_and_bad_values_name_the_variable() -> None:
    got = SdkSettings.from_env({"TRIGGER_API_URL": "http://a, http://b", "TRIGGER_SECRET_KEY":
                                "tr_dev_x", "TRIGGER_CHECKPOINT_AFTER": "2.5",
                                "TRIGGER_RUN_METADATA_FLUSH_INTERVAL": "250"})
    assert (got.api_url, got.secret_key) == ("http://a, http://b", "tr_dev_x")
    assert (got.checkpoint_after, got.metadata_flush_interval) == (2.5, 0.25)
    default = SdkSettings.from_env({})
    assert (default.api_url, default.secret_key) == ("http://localhost:3030", None)
    assert (default.checkpoint_after, default.metadata_flush_interval) == (10.0, 1.0)
    for name in ("TRIGGER_CHECKPOINT_AFTER", "TRIGGER_RUN_METADATA_FLUSH_INTERVAL"):
        with pytest.raises(SettingsError, match=name):
            SdkSettings.from_env({name: "soon"})


async def test_retry_loop_retries_fails_over_and_refuses() -> None:
    statuses = iter([503, 429, 200])
    moves: list[str] = []

    async def send() -> httpx.Response:
        return httpx.Response(next(statuses))

    async def fail_over() -> None:
        moves.append("next")

    def refuse(response: httpx.Response) -> NoReturn:
        raise AssertionError(f"refused {response.status_code}")

    policy = RetryPolicy(attempts=3, retry_statuses=frozenset({429, 503}),
                         delay=lambda attempt, response: 0.0,
                         fail_over_statuses=frozenset({503}))
    response = await send_with_retries(send, policy, fail_over=fail_over, refuse=refuse,
                                       unreachable=lambda exc: exc)
    assert response.status_code == 200 and moves == ["next"]


def test_created_tasks_lists_tasks_in_creation_order_from_a_mark() -> None:
    mark = len(created_tasks())

    @task(id="registry-one")
    async def one(payload: int) -> int:
        return payload

    two = task(id="registry-two", run=one.run)
    assert created_tasks(mark) == [one, two]
    created_tasks(mark).clear()  # a copy: the registry is unchanged
    assert created_tasks(mark) == [one, two]
