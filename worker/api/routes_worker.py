"""The worker protocol (docs/protocol.md): register, dequeue, heartbeat, complete, release, logs."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from worker.api.auth import authenticate_worker
from worker.api.bodies import read_model
from worker.api.responses import LineStream, json_response
from worker.api.state import api_state, engine_of
from worker.common.protocol import (
    DequeuedRun,
    EnvironmentInfo,
    Outcome,
    ProjectInfo,
    RegisterResponse,
    ReleaseResponse,
    Wire,
)
from worker.engine import metrics
from worker.engine.engine import Engine
from worker.engine.keys import Environment

router = APIRouter(prefix="/engine/v1/worker")
Env = Annotated[Environment, Depends(authenticate_worker)]


class RegisterBody(BaseModel):
    instance_id: uuid.UUID
    content_hash: str = Field(min_length=1, max_length=128)
    tasks: list[Wire]
    metadata: Wire = Field(default_factory=dict)


class DequeueBody(BaseModel):
    instance_id: uuid.UUID
    versions: list[uuid.UUID] = Field(min_length=1)
    max_runs: int = Field(default=1, ge=1, le=100)
    wait_ms: int = Field(default=0, ge=0, le=30_000)
    #: keep the response open and send each batch leased as it comes (docs/protocol.md,
    #: "Streamed dequeue"): one NDJSON line per batch, up to ``max_runs`` runs in all
    stream: bool = False


class RunIdsBody(BaseModel):
    instance_id: uuid.UUID
    run_ids: list[str] = Field(max_length=10_000)


class HeartbeatBody(RunIdsBody):
    #: the worker is shutting down: it serves no version from now on
    stopping: bool = False


class LeaseAsk(BaseModel):
    """``/complete``'s ``lease``: lease what a ``/dequeue`` with ``wait_ms=0`` would."""

    versions: list[uuid.UUID] = Field(min_length=1)
    max_runs: int = Field(default=1, ge=1, le=100)


class CompleteBody(BaseModel):
    instance_id: uuid.UUID
    completions: list[object] = Field(max_length=1000)  # an item that is not an object: refused
    #: complete-and-lease-next (docs/protocol.md): the reply gets "runs" too
    lease: LeaseAsk | None = None


class LogsBody(BaseModel):
    logs: list[object] = Field(max_length=10_000)  # a line that is not an object is skipped


@router.post("/register")
async def register(request: Request, env: Env) -> Wire:
    body = await read_model(request, RegisterBody)
    engine = engine_of(request)
    version = await engine.register_version(
        env, str(body.instance_id), body.content_hash, body.tasks, body.metadata
    )
    return RegisterResponse(
        version.version_id, version.version, EnvironmentInfo(env.id, env.slug, env.type),
        ProjectInfo(env.project_id, env.project_ref), engine.lease.lease_seconds,
        engine.lease.heartbeat_seconds,
    ).to_wire()


@router.post("/dequeue", response_model=Wire)
async def dequeue(request: Request, env: Env) -> Response:
    body = await read_model(request, DequeueBody)
    state = api_state(request)
    if body.stream and body.wait_ms:
        # what the long-poll refuses is refused before the 200's head: its versions (400),
        # too many long-polls of the environment (429)
        await state.engine.check_versions(env, [str(v) for v in body.versions])
        held = contextlib.AsyncExitStack()
        await held.enter_async_context(state.caps.poll(env.id))
        return LineStream(_batches(request, env, body), closing=held.aclose)
    async with state.caps.poll(env.id) if body.wait_ms else contextlib.nullcontext(), \
            _hang_up_watch(request) as gone:
        leased = await state.engine.dequeue(
            env,
            str(body.instance_id),
            [str(v) for v in body.versions],
            body.max_runs,
            body.wait_ms,
            gone=gone,
        )
    return json_response({"runs": await _leased_wire(state.engine, env, leased)})


async def _batches(request: Request, env: Environment,
                   body: DequeueBody) -> AsyncGenerator[bytes, None]:
    """A streamed dequeue's lines: each batch leased, as soon as it is, until ``max_runs`` runs
    went out, ``wait_ms`` passed since the request, or the worker hung up. Between batches the
    stream waits as a long-poll does (a trigger of this process hands its run over, a
    notification wakes a look), so a worker with free slots is not asked to come back after
    every run."""
    state = api_state(request)
    credit = body.max_runs
    deadline = time.monotonic() + body.wait_ms / 1000
    versions = [str(v) for v in body.versions]
    async with _hang_up_watch(request) as gone:
        while credit > 0:
            wait_ms = int((deadline - time.monotonic()) * 1000)
            if wait_ms <= 0 or await gone():
                return
            leased = await state.engine.dequeue(env, str(body.instance_id), versions, credit,
                                                wait_ms, gone=gone)
            if not leased:  # the wait is over (or the worker hung up)
                return
            credit -= len(leased)
            yield orjson.dumps({"runs": await _leased_wire(state.engine, env, leased)}) + b"\n"


@contextlib.asynccontextmanager
async def _hang_up_watch(request: Request) -> AsyncIterator[Callable[[], Awaitable[bool]]]:
    """``gone()``: has the worker hung up on this long-poll? Answered from a flag that a watcher
    sets when the server reports the disconnect (the body is read: the next ASGI message is
    that), so asking never yields to the loop: Starlette's ``is_disconnected`` does, and a run a
    trigger hands over (engine/handoff.py) would wait for whatever runs meanwhile."""
    hung_up = asyncio.Event()

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        hung_up.set()

    async def gone() -> bool:
        return hung_up.is_set()

    watcher = asyncio.ensure_future(watch())
    try:
        yield gone
    finally:
        watcher.cancel()


async def _leased_wire(engine: Engine, env: Environment, leased: list[DequeuedRun]) -> list[Wire]:
    runs = [run.to_wire() for run in await _with_env_vars(engine, env, leased)]
    metrics.observe_dequeued(runs)
    return runs


async def _with_env_vars(engine: Engine, env: Environment,
                         runs: list[DequeuedRun]) -> list[DequeuedRun]:
    """The environment's variables (routes_envvars) on each leased run: its executor sets them
    for that run only."""
    if runs:
        variables = await engine.env_vars_for_runs(env)
        if variables:
            return [replace(run, env_vars=variables) for run in runs]
    return runs


@router.post("/heartbeat", response_model=Wire)
async def heartbeat(request: Request, env: Env) -> Response:
    body = await read_model(request, HeartbeatBody)
    reply = await engine_of(request).heartbeat(env, str(body.instance_id), body.run_ids,
                                               stopping=body.stopping)
    return json_response(reply.to_wire())


@router.post("/complete", response_model=Wire)
async def complete(request: Request, env: Env) -> Response:
    body = await read_model(request, CompleteBody, max_depth=None)  # checked item by item
    engine = engine_of(request)
    instance_id = str(body.instance_id)
    leased: list[DequeuedRun] | None = None
    if body.lease is None:
        results = await engine.complete(env, instance_id, body.completions)
    else:  # complete-and-lease-next (docs/protocol.md)
        results, leased = await engine.complete_and_lease(
            env, instance_id, body.completions, [str(v) for v in body.lease.versions],
            body.lease.max_runs)
    by_id = {c.get("run_id"): c for c in body.completions if isinstance(c, dict)}
    for result in results:
        if result.outcome is not Outcome.LEASE_LOST:
            metrics.COMPLETIONS.labels(outcome=metrics.completion_outcome(
                by_id.get(result.run_id) or {}, {"status": result.status})).inc()
    # an attempt retried in place starts from the result's "next" run, a leased run too
    following = [r.next for r in results if r.next is not None]
    if following:
        with_vars = iter(await _with_env_vars(engine, env, following))
        results = [replace(r, next=next(with_vars)) if r.next is not None else r
                   for r in results]
    reply: Wire = {"results": [r.to_wire() for r in results]}
    if leased is not None:
        reply["runs"] = await _leased_wire(engine, env, leased)
    return json_response(reply)


@router.post("/release")
async def release(request: Request, env: Env) -> Wire:
    body = await read_model(request, RunIdsBody)
    released = await engine_of(request).release_leases(env, str(body.instance_id),
                                                        body.run_ids)
    return ReleaseResponse(released).to_wire()


@router.post("/logs")
async def logs(request: Request, env: Env) -> Wire:
    body = await read_model(request, LogsBody, max_depth=None)  # sanitised line by line
    return {"stored": await engine_of(request).store_logs(env, body.logs)}
