"""Literal translations of Trigger.dev v4 code inside real executors (zygote + forked
executors, tests/runtime/harness.py): positional hooks, ``handle_error``, retry and config
twins, ``await idempotency_keys.create``, ``logger.info("msg", {...})``, ``logger.trace``,
``usage``, and the schema kinds ``schema_task`` accepts. Discovery refuses hooks it cannot call.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.runtime.harness import Harness
from tests.runtime.projects import write_project
from worker.runtime.discovery import DiscoveryError, discover

CONFIG = """
from worker import define_config, logger

config = define_config(
    project="proj", dirs=["trigger"], max_duration=60, default_machine="medium-1x",
    on_start=lambda payload, params: logger.info(f"global_on_start:{params.task}"),
)
"""

TASKS = """
import dataclasses
from typing import TypedDict

from pydantic import TypeAdapter

import asyncio

from worker import heartbeats, idempotency_keys, logger, schema_task, task, tasks, usage
from worker import wait_until

tasks.on_start("audit", lambda payload, params: logger.info(f"registered_on_start:{params.task}"))
tasks.on_failure(lambda p, e, params: logger.info(f"registered_on_failure:{e}"))


@task(id="bg")
async def bg(payload):
    async def later():
        await asyncio.sleep(0.05)
        logger.info("wait_until done")

    wait_until(later())
    await heartbeats.yield_()
    return "returned"


@task(id="ts-failure", retry={"max_attempts": 1},
      on_failure=lambda p, e: logger.info(f"on_failure:{p['n']}:{e}"),
      on_complete=lambda payload, result, params: logger.info(
          f"on_complete:{result['ok']}:{params.ctx.run.id}"),
      cleanup=lambda params: logger.info(f"cleanup:{params.task}:{params['payload']['n']}"))
def ts_failure(payload):
    raise ValueError("boom")


async def around(payload, params):
    logger.info("mw:before")
    await params.next()
    logger.info("mw:after")


@task(id="ts-success", middleware=around,
      on_start=lambda payload, params: logger.info(f"on_start:{params.ctx.attempt.number}"),
      on_success=lambda p, out, opts: logger.info(f"on_success:{out['same']}"))
async def ts_success(payload, ctx):
    key = await idempotency_keys.create("k")
    plain = idempotency_keys.create("k")
    logger.info("attrs", {"user_id": 1, "api_key": "s"}, extra=2)
    with logger.trace("step", {"rows": 3}) as span:
        span.set_attribute("done", True)
    doubled = await logger.trace("call", lambda span: 21 * 2)
    started = logger.start_span("manual", {"k": 1})
    started.end()
    with usage.measure() as measured:
        sum(range(1000))
    current = usage.get_current()
    return {"same": key == plain, "len": len(key), "doubled": doubled,
            "measured": measured.duration_ms >= 0,
            "cost": current.total_cost_in_cents > current.base_cost_in_cents}


@task(id="on-preset", machine={"preset": "large-1x"})
def on_preset(payload):
    return None


@task(id="ts-handle-error",
      retry={"max_attempts": 5, "min_timeout_in_ms": 1234, "max_timeout_in_ms": 5000,
             "factor": 1, "randomize": False},
      handle_error=lambda payload, error, params: (
          {"skip_retrying": True} if "fatal" in str(error) else None))
def ts_handle_error(payload):
    raise RuntimeError(payload["msg"])


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Named(TypedDict):
    name: str


@schema_task(id="s-dataclass", schema=Point)
def s_dataclass(payload):
    return {"type": type(payload).__name__, "sum": payload.x + payload.y}


@schema_task(id="s-typeddict", schema=Named)
def s_typeddict(payload):
    return payload["name"]


@schema_task(id="s-adapter", schema=TypeAdapter(list[int]))
def s_adapter(payload):
    return sum(payload)


@schema_task(id="s-json", schema={"type": "object", "required": ["a"],
                                  "properties": {"a": {"type": "integer"}}})
def s_json(payload):
    return payload["a"]


def parse_even(data):
    if data % 2:
        raise ValueError("odd")
    return data // 2


@schema_task(id="s-callable", schema=parse_even)
def s_callable(payload):
    return payload
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"trigger/tasks.py": TASKS}, config=CONFIG)


async def test_positional_hooks_run_in_triggerdev_order(project: Path) -> None:
    async with Harness(project) as h:
        failed = await h.execute("ts-failure", {"n": 1}, run_id="run_f", max_attempts=1)
        assert failed["ok"] is False and failed["error"]["message"] == "boom"
        messages = h.messages("run_f")
        assert "on_failure:1:boom" in messages  # the seed's onFailure(payload, error)
        assert "on_complete:False:run_f" in messages  # (payload, result, params)
        assert "cleanup:ts-failure:1" in messages  # v4's single params object
        assert "global_on_start:ts-failure" in messages  # config hook (payload, params)
        # tasks.on_start / tasks.on_failure: after the config's hook, before the task's
        assert messages.index("registered_on_start:ts-failure") == \
            messages.index("global_on_start:ts-failure") + 1
        assert "registered_on_failure:boom" in messages

        done = await h.execute("ts-success", {}, run_id="run_s")
        assert done["ok"] is True, done
        messages = h.messages("run_s")
        order = [m for m in messages if m.split(":")[0] in {"mw", "on_start", "on_success"}]
        assert order == ["mw:before", "on_start:1", "on_success:True", "mw:after"]
        # no hook raised (a raising hook would have logged "... hook raised (ignored)")
        assert not [m for m in h.messages() if "raised" in m]


async def test_literal_sdk_calls_inside_a_run(project: Path) -> None:
    async with Harness(project) as h:
        done = await h.execute("ts-success", {}, run_id="run_s")
        from worker.common.serialization import loads

        output = loads(done["output"], done["output_type"])
        assert output == {"same": True, "len": 64, "doubled": 42, "measured": True,
                          "cost": True}
        by_message = {f["message"]: f for f in h.logs if f["run_id"] == "run_s"}
        assert by_message["attrs"]["attributes"] == {"user_id": 1, "api_key": "[REDACTED]",
                                                     "extra": 2}
        # logger.trace spans are OpenTelemetry spans now, not log records (their export is
        # tested in tests/observability)
        assert not [m for m in by_message if m.startswith("span ")]


async def test_wait_until_settles_before_the_attempt_completes(project: Path) -> None:
    async with Harness(project) as h:
        done = await h.execute("bg", None, run_id="run_bg")
        assert done["ok"] is True
        assert "wait_until done" in h.messages("run_bg")  # logged before the completion


async def test_handle_error_alias_and_retry_twins(project: Path) -> None:
    async with Harness(project) as h:
        by_id = {t["id"]: t for t in h.manifest["tasks"]}
        retry = by_id["ts-handle-error"]["retry"]
        assert retry == {"max_attempts": 5, "min_timeout_ms": 1234, "max_timeout_ms": 5000,
                         "factor": 1, "randomize": False}
        assert by_id["ts-success"]["machine"] == "medium-1x"  # config default_machine
        assert by_id["on-preset"]["machine"] == "large-1x"  # Trigger.dev's {"preset": ...}
        fatal = await h.execute("ts-handle-error", {"msg": "fatal"}, retry=retry,
                                max_attempts=5)
        assert fatal["skipped_retrying"] is True and fatal["retry"] is None
        transient = await h.execute("ts-handle-error", {"msg": "flaky"}, retry=retry,
                                    max_attempts=5)
        assert transient["skipped_retrying"] is False
        assert transient["retry"] == {"delay_ms": 1234}


async def test_schema_kinds_parse_in_the_worker(project: Path) -> None:
    from worker.common.serialization import loads

    async with Harness(project) as h:
        schemas = {t["id"]: t["payload_schema"] for t in h.manifest["tasks"]}
        assert schemas["s-dataclass"]["required"] == ["x", "y"]
        assert schemas["s-typeddict"]["required"] == ["name"]
        assert schemas["s-adapter"] == {"items": {"type": "integer"}, "type": "array"}
        assert schemas["s-json"]["required"] == ["a"]
        assert schemas["s-callable"] is None  # nothing to derive: checked in the worker only

        async def output(task_id: str, payload: object) -> object:
            done = await h.execute(task_id, payload)
            assert done["ok"], done
            return loads(done["output"], done["output_type"])

        assert await output("s-dataclass", {"x": 1, "y": 2}) == {"type": "Point", "sum": 3}
        assert await output("s-typeddict", {"name": "ada"}) == "ada"
        assert await output("s-adapter", [1, 2, "3"]) == 6
        assert await output("s-json", {"a": 5}) == 5
        assert await output("s-callable", 8) == 4
        for task_id, bad in [("s-dataclass", {"x": "no"}), ("s-json", {"a": "x"}),
                             ("s-callable", 3), ("s-adapter", ["x"])]:
            failed = await h.execute(task_id, bad)
            assert failed["ok"] is False and failed["error"]["code"] == "TASK_INPUT_ERROR"


def _pkg() -> str:
    return f"tasks_{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ("on_failure=lambda a, b, c, d: None", "hook on_failure needs 4 arguments"),
        ("on_start=lambda payload, error: None", "hook on_start asks for ['error']"),
        ("on_success=lambda p, *, extra: None", "keyword-only parameters ['extra']"),
    ],
)
def test_discovery_refuses_hooks_it_cannot_call(tmp_path: Path, hook: str, message: str) -> None:
    p = _pkg()
    root = write_project(tmp_path, {f"{p}/a.py": f"""
        from worker import task

        @task(id="a", {hook})
        def a(payload):
            return 1
        """}, package=p)
    with pytest.raises(DiscoveryError) as caught:
        discover(root)
    text = str(caught.value)
    assert message in text and "task 'a'" in text and "Trigger.dev's order" in text


def test_config_twins_and_refusals() -> None:
    from worker.sdk.config import ConfigError, define_config

    config = define_config(project="p", default_machine="large-1x",
                           retries={"default": {"min_timeout_in_ms": 10}},
                           handle_error=lambda payload, error, params: None)
    assert config.machine == "large-1x"
    assert config.retries.default == {"min_timeout_ms": 10}
    assert "catch_error" in config.global_hooks()
    with pytest.raises(ConfigError, match="give machine or default_machine"):
        define_config(project="p", machine="micro", default_machine="micro")
    with pytest.raises(ConfigError, match="hook on_success needs 4 arguments"):
        define_config(project="p", on_success=lambda a, b, c, d: None)
    with pytest.raises(ConfigError, match="unknown retry option"):
        define_config(project="p", retries={"default": {"min_timeout": 1}})


def test_task_is_generic_in_payload_and_output(tmp_path: Path) -> None:
    """A type checker sees ``Task[Payload, Output]``: a wrong payload is an error and
    ``trigger_and_wait(...).unwrap()`` is the output type."""
    from mypy import api

    snippet = tmp_path / "typed.py"
    snippet.write_text(
        "from typing import reveal_type\n"
        "from worker import task\n"
        "@task(id='child')\n"
        "async def child(payload: dict[str, int], ctx: object) -> list[str]:\n"
        "    return []\n"
        "async def parent() -> None:\n"
        "    reveal_type((await child.trigger_and_wait({'a': 1})).unwrap())\n"
        "    await child.trigger_and_wait('wrong')\n"
    )
    out, _, status = api.run([str(snippet), "--cache-dir", str(tmp_path / "cache"),
                              "--no-error-summary"])
    assert status == 1, out
    assert 'Revealed type is "builtins.list[builtins.str]"' in out or \
        'Revealed type is "list[str]"' in out, out
    assert 'incompatible type "str"; expected "dict[str, int] | None"' in out, out


async def test_retry_on_throw_and_fetch() -> None:
    import http.server
    import threading

    from worker import AbortTaskRunError, retry

    calls: list[tuple[int, int]] = []

    async def flaky(attempt: int, max_attempts: int) -> str:
        calls.append((attempt, max_attempts))
        if attempt < 3:
            raise RuntimeError("not yet")
        return "done"

    assert await retry.on_throw(flaky, max_attempts=4, min_timeout_in_ms=1, factor=1) == "done"
    assert calls == [(1, 4), (2, 4), (3, 4)]

    def abort() -> None:
        calls.append((0, 0))
        raise AbortTaskRunError("stop")

    calls.clear()
    with pytest.raises(AbortTaskRunError):
        await retry.on_throw(abort, max_attempts=5, min_timeout_in_ms=1)
    assert calls == [(0, 0)]  # never retried

    statuses = [503, 503, 200]
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            status = statuses.pop(0) if statuses else 200
            self.send_response(status)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/x"
        response = await retry.fetch(url, retry={"by_status": {
            "500-599": {"max_attempts": 3, "min_timeout_in_ms": 1, "factor": 1}}})
        assert response.status_code == 200 and seen == ["/x", "/x", "/x"]
        statuses[:] = [500, 500, 500]
        response = await retry.fetch(url, retry={"by_status": {
            "500-599": {"max_attempts": 2, "min_timeout_in_ms": 1}}})
        assert response.status_code == 500 and len(seen) == 5  # gave up after 2 attempts
    finally:
        server.shutdown()
