"""The SDK's requests go over worker/sdk/http1.py (httpx only for streams and behind a proxy),
against the real API server: query strings, ``with_auth``'s base URL and token, error
responses, connections kept alive and dropped after a fork, and the proxy path."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.protocol_worker import ProtocolWorker
from tests.sdk.conftest import TASK
from worker import auth, configure, runs, tasks
from worker.sdk import transport
from worker.sdk.errors import ApiError, AuthenticationError, NotFoundError
from worker.sdk.http1 import Http1Client


async def test_requests_share_one_kept_alive_http1_connection(sdk: ProtocolWorker,
                                                              api_server: Any) -> None:
    handles = [await tasks.trigger(TASK, {"n": n}, tags=["http1"]) for n in range(3)]
    session = transport.default.session(api_server.url)
    assert isinstance(session, Http1Client)
    assert session.connections_opened == 1
    # a query string (runs.list's filters) goes out encoded
    page = await runs.list(tag=["http1"], status=["QUEUED"])
    assert {r.id for r in page.data} == {h.id for h in handles}
    assert session.connections_opened == 1
    # the trigger's one-time run token came back in the response headers
    assert handles[0].public_access_token


async def test_error_responses_become_sdk_errors(sdk: ProtocolWorker) -> None:
    with pytest.raises(NotFoundError) as missing:
        await runs.retrieve("run_doesnotexist")
    assert missing.value.status == 404 and "not found" in str(missing.value)
    with pytest.raises(ApiError) as bad:
        await transport.request("GET", "/api/v3/runs/run_x", params={"waitMs": "soon"})
    assert bad.value.status == 400 and "waitMs" in str(bad.value)
    configure(secret_key="tr_dev_notakey")
    with pytest.raises(AuthenticationError) as refused:
        await runs.retrieve("run_x")
    assert refused.value.status == 401


async def test_with_auth_sends_its_token_to_its_base_url(sdk: ProtocolWorker,
                                                         api_server: Any) -> None:
    handle = await tasks.trigger(TASK, 1)
    configure(api_url="http://127.0.0.1:9", secret_key="tr_dev_notakey")  # unused inside
    assert handle.public_access_token
    async with auth.with_auth(access_token=handle.public_access_token,
                              base_url=api_server.url):
        run = await runs.retrieve(handle.id)  # the run token reads its own run
    assert run.id == handle.id


async def test_a_forked_process_connects_again(sdk: ProtocolWorker, api_server: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    await tasks.trigger(TASK, 1)
    first = transport.default.session(api_server.url)
    monkeypatch.setattr(transport.default, "pid", -1)  # what a forked child sees
    second = transport.default.session(api_server.url)
    assert second is not first
    await tasks.trigger(TASK, 2)
    assert isinstance(second, Http1Client) and second.connections_opened == 1


# triggers through the SDK in a fresh interpreter; prints the kind of session that carried it
CHILD = """
import asyncio, sys, worker
from worker.sdk import transport

async def main():
    worker.configure(api_url=sys.argv[1], secret_key=sys.argv[2])
    handle = await worker.tasks.trigger(sys.argv[3], 1)
    run = await worker.runs.retrieve(handle)
    assert run.id == handle.id, run
    clients = transport.default.clients[asyncio.get_running_loop()]
    assert clients.stream is None  # no httpx client was made for plain requests
    print(*(type(s).__name__ for s in clients.sessions.values()))

asyncio.run(main())
"""


@pytest.mark.parametrize("proxy", [False, True])
def test_httpx_only_behind_a_proxy(sdk: ProtocolWorker, api_server: Any,
                                   project_keys: dict[str, str], proxy: bool) -> None:
    env = {k: v for k, v in os.environ.items()
           if k.upper() not in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    if proxy:  # a proxy that is never used for this host: httpx honours NO_PROXY
        env.update(HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="127.0.0.1")
    out = subprocess.run([sys.executable, "-c", CHILD, api_server.url, project_keys["dev"],
                          TASK], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("HttpxSession" if proxy else "Http1Client")


async def test_many_long_polls_do_not_hold_up_a_trigger(sdk: ProtocolWorker) -> None:
    """A caller may wait on many runs at once (runs.poll long-polls for up to ~28 s each):
    the SDK's connections are as many as httpx allowed (100), so a trigger goes out meanwhile."""
    handles = [await tasks.trigger(TASK, n) for n in range(24)]
    polls = [asyncio.create_task(runs.poll(h, timeout=8)) for h in handles]
    await asyncio.sleep(0.5)  # every long-poll is waiting in the API
    late = await asyncio.wait_for(tasks.trigger(TASK, "late"), 6)
    assert late.id and not any(p.done() for p in polls)
    for poll in polls:
        poll.cancel()
    await asyncio.gather(*polls, return_exceptions=True)
