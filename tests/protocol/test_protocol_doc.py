"""docs/protocol.md against worker/common/protocol.py: every field the doc names is one the
types put on the wire, every field the types put on the wire is named in the doc, and every
message reads back (``from_wire``) as the value it was written from (``to_wire``)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from worker.common.protocol import (
    AttemptInfo,
    Completion,
    CompletionResult,
    DequeuedRun,
    DequeueRequest,
    EnvironmentInfo,
    HeartbeatRequest,
    HeartbeatResponse,
    LogRecord,
    MachineInfo,
    Outcome,
    ProjectInfo,
    RegisterRequest,
    RegisterResponse,
    ReleaseRequest,
    ReleaseResponse,
    RunContext,
    RunInfo,
    TaskInfo,
    Wire,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

RUN = DequeuedRun(
    run_id="run_1", attempt_number=2, task_id="hello-world", version_id="v-uuid",
    version="20261128.3", payload='{"a":1}', payload_type="application/json", max_attempts=3,
    retry={"max_attempts": 3}, max_duration=300, machine="small-1x",
    ctx=RunContext(
        run=RunInfo(id="run_1", tags=["t"], created_at="2026-11-28T00:00:00+00:00",
                    started_at=None, idempotency_key=None, max_attempts=3,
                    version="20261128.3", max_duration=300, priority=0, is_test=False,
                    parent_task_run_id=None, root_task_run_id=None, metadata={"k": 1}),
        attempt=AttemptInfo(2, "2026-11-28T00:00:01+00:00"),
        task=TaskInfo("hello-world", "trigger/hello.py"), queue="task/hello-world",
        environment=EnvironmentInfo("env-uuid", "dev", "DEVELOPMENT"),
        project=ProjectInfo("proj-uuid", "proj"), machine=MachineInfo.preset("small-1x"),
        batch_id="batch_1", worker_instance_id="inst-uuid", journal=[{"seq": 0}]),
    lease_expires_at="2026-11-28T00:00:30+00:00", resumed=True, execution_ms=12,
    journal=[{"seq": 0}], traceparent="00-" + "a" * 32 + "-" + "b" * 16 + "-01",
    env_vars={"NAME": "value"},
)
FAILURE = Completion("run_1", 2, False, error={"type": "BUILT_IN_ERROR", "message": "x"},
                     retry_delay_ms=2000, skipped_retrying=False, retry_in_place=True,
                     retry_machine="medium-1x", duration_ms=5)
SUCCESS = Completion("run_1", 1, True, output='{"ok":true}', output_type="application/json",
                     duration_ms=12)
RESULT = CompletionResult("run_1", Outcome.RETRY_IMMEDIATELY, "EXECUTING", error="why",
                          next=replace(RUN, delay_ms=0))

#: what each section of the doc describes: (request, response) as the wire carries them
SECTIONS: dict[str, tuple[Wire, Wire]] = {
    "register": (
        RegisterRequest("inst-uuid", "abc", [{"id": "hello-world"}],
                        {"host": "h", "pid": 1}).to_wire(),
        RegisterResponse("v-uuid", "20261128.3", EnvironmentInfo("e", "dev", "DEVELOPMENT"),
                         ProjectInfo("p", "proj"), 30, 5).to_wire(),
    ),
    "dequeue": (DequeueRequest("inst-uuid", ["v-uuid"], 4, 10_000).to_wire(),
                {"runs": [RUN.to_wire()]}),
    "heartbeat": (HeartbeatRequest("inst-uuid", ["run_1"], stopping=True).to_wire(),
                  HeartbeatResponse(["run_1"], ["run_1"]).to_wire()),
    "complete": ({"instance_id": "inst-uuid",
                  "completions": [SUCCESS.to_wire(), FAILURE.to_wire()],
                  "lease": {"versions": ["v-uuid"], "max_runs": 4}},
                 {"results": [RESULT.to_wire()], "runs": [RUN.to_wire()]}),
    "release": (ReleaseRequest("inst-uuid", ["run_1"]).to_wire(),
                ReleaseResponse(["run_1"]).to_wire()),
    "logs": ({"logs": [LogRecord("run_1", 1, "info", "hi", {"a": 1},
                                 "2026-11-28T00:00:00+00:00", "c" * 16).to_wire()]},
             {"stored": 1}),
}

#: objects the protocol carries without looking inside (their keys are not protocol fields)
OPAQUE = {"tasks", "metadata", "retry", "error", "journal", "env_vars", "attributes",
          "payload", "output"}


def _section(name: str) -> str:
    text = DOC.read_text()
    match = re.search(rf"^## POST /engine/v1/worker/{name}\n(.*?)(?=^## |\Z)", text,
                      re.S | re.M)
    assert match, f"docs/protocol.md has no section for /{name}"
    return match.group(1)


def _json_blocks(section: str) -> str:
    return "\n".join(re.findall(r"```json\n(.*?)```", section, re.S))


def _keys(value: object, inside: str = "") -> set[str]:
    """Every key of a wire value, not looking into opaque objects."""
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            keys.add(key)
            if key not in OPAQUE:
                keys |= _keys(item, key)
    elif isinstance(value, list):
        for item in value:
            keys |= _keys(item, inside)
    return keys


def _doc_keys(block: str) -> set[str]:
    """Field names in a doc example: ``"name":`` keys, and names listed as ``{"a", "b"}``."""
    named = set(re.findall(r'"([a-z_]+)"\s*:', block))
    for group in re.findall(r'\{\s*("[a-z_]+"(?:\s*,\s*"[a-z_]+")*)\s*\}', block):
        named |= set(re.findall(r'"([a-z_]+)"', group))
    return named


def _opaque_keys(block: str) -> set[str]:
    """Keys written inside an opaque object of the doc (register's ``metadata``)."""
    inner = re.findall(r'"(?:metadata)":\s*\{([^{}]*)\}', block)
    return {k for part in inner for k in re.findall(r'"([a-z_]+)"\s*:', part)}


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_field_in_the_doc_is_on_the_wire(name: str) -> None:
    block = _json_blocks(_section(name))
    request, response = SECTIONS[name]
    wire = _keys(request) | _keys(response)
    unknown = _doc_keys(block) - wire - _opaque_keys(block)
    assert not unknown, f"/{name}: docs/protocol.md names fields the types lack: {unknown}"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_field_on_the_wire_is_in_the_doc(name: str) -> None:
    section = _section(name)
    request, response = SECTIONS[name]
    named = set(re.findall(r'"([a-z_]+)"', section)) | set(re.findall(r"`([a-z_]+)`", section))
    if name == "complete":  # its "next" is a dequeued run, documented under /dequeue
        named |= _doc_keys(_json_blocks(_section("dequeue"))) | {"delay_ms"}
    missing = (_keys(request) | _keys(response)) - named
    assert not missing, f"/{name}: fields on the wire missing from docs/protocol.md: {missing}"


@pytest.mark.parametrize("value", [
    RUN, SUCCESS, FAILURE, RESULT, CompletionResult(None, Outcome.REFUSED, error="bad"),
    RegisterRequest("i", "h", [{"id": "t"}], {"pid": 1}),
    RegisterResponse("v", "1", EnvironmentInfo("e", "dev", "DEVELOPMENT"),
                     ProjectInfo("p", "r"), 30.0, 5.0),
    DequeueRequest("i", ["v"], 2, 100), HeartbeatRequest("i", ["r"], True),
    HeartbeatResponse(["r"], []), ReleaseRequest("i", ["r"]), ReleaseResponse(["r"]),
    LogRecord("r", 1, "info", "m", None, "t", None),
], ids=lambda v: type(v).__name__)
def test_messages_read_back_as_written(value: object) -> None:
    assert type(value).from_wire(value.to_wire()) == value  # type: ignore[attr-defined]


def test_outside_a_worker_a_run_has_no_lease_fields_in_its_context() -> None:
    ctx = RunContext.from_wire(RUN.ctx.to_wire())
    bare = RunContext(ctx.run, ctx.attempt, ctx.task, ctx.queue, ctx.environment, ctx.project,
                      MachineInfo.preset("unknown-machine"))
    wire = bare.to_wire()
    assert "worker" not in wire and "journal" not in wire
    assert wire["machine"] == {"name": "unknown-machine"} and wire["batch"] is None
