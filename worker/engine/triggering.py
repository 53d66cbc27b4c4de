"""Creating runs: one trigger or a batch, with idempotency keys, debounce, delays, TTLs,
version pins, queues and concurrency keys (docs/triggerdev-semantics.md, "Idempotency keys",
"Trigger options", "Queues")."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from worker.common.limits import LimitError, check_json, check_text, text_depth_may_exceed
from worker.engine import trace_context, waitpoints
from worker.engine.db import Conn, Pool, fetch_all, fetch_one
from worker.engine.errors import Conflict, EngineError, NotFound, PayloadTooLarge
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.models import (
    MAX_PAYLOAD_BYTES,
    BatchItem,
    BatchOptions,
    TriggerBody,
    TriggerOptions,
    parse_duration,
)
from worker.engine.payload_schema import check_payload
from worker.engine.queries import Q

#: A run that ended in one of these gives its idempotency key back
#: (docs/triggerdev-semantics.md, "Idempotency keys").
RELEASES_KEY = frozenset(
    {"COMPLETED_WITH_ERRORS", "CRASHED", "SYSTEM_FAILURE", "TIMED_OUT", "EXPIRED"}
)
#: Payloads above this many bytes are kept out of the hot runs table (in run_packets).
OFFLOAD_BYTES = 64 * 1024
#: A worker seen within this many seconds counts as connected (PENDING_VERSION otherwise).
LIVE_WORKER_SECONDS = 60.0


def encode_payload(payload: Any, payload_type: str | None) -> tuple[str, str]:
    """The stored text and type of a trigger payload; refuses payloads over the limit."""
    if payload_type and payload_type != "application/json":
        if not isinstance(payload, str):
            raise EngineError(f"payload must be a string when payloadType is {payload_type!r}")
        if "\x00" in payload:
            raise EngineError("a payload in text form must not contain a NUL character")
        text = payload
    else:
        payload_type = "application/json"
        text = orjson.dumps(payload).decode()
        if text_depth_may_exceed(text):  # the stored-JSON rule (a NUL is escaped in text)
            try:
                check_json(payload, "payload", nul_ok=True)
            except LimitError as exc:
                raise EngineError(exc.message) from None
    if len(text) > MAX_PAYLOAD_BYTES:
        raise PayloadTooLarge(
            f"payload is {len(text)} bytes; the limit is {MAX_PAYLOAD_BYTES} bytes (3 MiB). "
            "Store large data elsewhere and pass a reference."
        )
    return text, payload_type


class RunCreator:
    """One trigger inside a transaction, with the per-transaction lookups cached."""

    def __init__(self, conn: Conn, env: Environment) -> None:
        self.conn = conn
        self.env = env
        self._live: dict[str, bool] = {}
        self._queues: dict[str, bool] = {}
        self._definitions: dict[str, dict[str, Any]] = {}

    async def load_definitions(self, task_ids: list[str]) -> None:
        params = {"environment_id": self.env.id, "task_ids": task_ids,
                  "live_seconds": LIVE_WORKER_SECONDS}
        for row in await fetch_all(self.conn, Q.find_tasks, params):
            self._definitions[row["task_id"]] = row["definition"]
            self._live[row["task_id"]] = row["live"]
            # the default queue of a registered task is declared with it
            self._queues[(row["definition"].get("queue") or {}).get("name") or ""] = True

    def definition(self, task_id: str) -> dict[str, Any]:
        try:
            return self._definitions[task_id]
        except KeyError:
            raise NotFound(
                f"task {task_id!r} is not registered in the {self.env.slug} environment of "
                f"project {self.env.project_ref!r}; start a worker that exports it "
                "(trigger dev / trigger worker)"
            ) from None

    async def _ready_status(self, task_id: str, queue: str) -> str:
        """PENDING, or PENDING_VERSION while no connected worker has the task or the queue
        is not declared yet."""
        if queue not in self._queues:
            params = {"environment_id": self.env.id, "name": queue}
            row = await fetch_one(self.conn, Q.queue_exists, params)
            self._queues[queue] = bool(row and row["exists"])
        return "PENDING" if self._live.get(task_id) and self._queues[queue] else "PENDING_VERSION"

    async def _version_id(self, name: str | None) -> str | None:
        if name is None:
            return None
        row = await fetch_one(self.conn, 
            Q.find_version_by_name, {"environment_id": self.env.id, "version": name}
        )
        if row is None:
            raise NotFound(f"version {name!r} does not exist in the {self.env.slug} environment")
        return str(row["id"])

    async def _parent(self, parent_run_id: str | None) -> dict[str, Any] | None:
        if parent_run_id is None:
            return None
        params = {"id": parent_run_id, "environment_id": self.env.id}
        row = await fetch_one(self.conn, Q.find_parent, params)
        if row is None:
            raise NotFound(f"parent run {parent_run_id!r} not found in this environment")
        return row

    async def params(
        self,
        task_id: str,
        payload: tuple[str, str],
        options: TriggerOptions,
        batch_id: str | None = None,
        replayed_from: str | None = None,
        batch_index: int | None = None,
    ) -> dict[str, Any]:
        """The insert_run parameters of one run (no id yet)."""
        definition = self.definition(task_id)
        now = datetime.now(UTC)
        run_at = options.run_at()
        debounce = options.debounce
        if debounce is not None:
            run_at = now + parse_duration(debounce.delay, "debounce.delay")
        queue = (
            options.queue_name() or (definition.get("queue") or {}).get("name") or f"task/{task_id}"
        )
        status = "DELAYED" if run_at else await self._ready_status(task_id, queue)
        ttl = options.ttl if options.ttl is not None else definition.get("ttl")
        expires_at = None
        if ttl not in (None, 0, "0"):
            expires_at = (run_at or now) + parse_duration(ttl, "ttl")
        offloaded = len(payload[0]) > OFFLOAD_BYTES
        parent = await self._parent(options.parent_run_id)
        parent_trace = trace_context.of_row(parent) if parent else None
        trace = trace_context.for_new_run(parent_trace.trace_id if parent_trace else None,
                                          parent_trace.span_id if parent_trace else None)
        return {
            "environment_id": self.env.id,
            "task_id": task_id,
            "status": status,
            "payload": None if offloaded else payload[0],
            "payload_type": payload[1],
            "payload_offloaded": offloaded,
            "queue": queue,
            "concurrency_key": options.concurrency_key or "",
            "priority_ms": round(options.priority * 1000),
            "run_at": run_at,
            "expires_at": expires_at,
            "max_attempts": options.max_attempts,
            "max_duration": options.max_duration,
            "machine": options.machine,
            "version_id": await self._version_id(options.lock_to_version),
            "idempotency_key": options.idempotency_key,
            "idempotency_key_expires_at": options.idempotency_expiry(),
            "tags": options.tags or [],
            "metadata": Jsonb(options.metadata) if options.metadata is not None else None,
            "batch_id": batch_id,
            "parent_run_id": options.parent_run_id,
            "root_run_id": str(parent["root_id"]) if parent else None,
            "is_test": options.test,
            "debounce_key": debounce.key if debounce else None,
            "debounce_deadline": (
                now + parse_duration(debounce.max_delay, "debounce.maxDelay")
                if debounce and debounce.max_delay is not None
                else None
            ),
            "replayed_from": replayed_from,
            "batch_index": batch_index,
            "trace_id": trace.trace_id,
            "span_id": trace.span_id,
            "parent_span_id": trace.parent_span_id,
        }

    async def create(
        self,
        task_id: str,
        payload: tuple[str, str],
        options: TriggerOptions,
        batch_id: str | None = None,
        replayed_from: str | None = None,
        batch_index: int | None = None,
        run_id: str | None = None,
    ) -> tuple[str, bool]:
        """Insert one run (or return the idempotent / debounced one). Returns (id, cached)."""
        params = await self.params(task_id, payload, options, batch_id, replayed_from, batch_index)
        for _ in range(5):
            cached = await self._existing(task_id, options, params)
            if cached:
                return cached, True
            params["id"] = run_id or new_id("run")
            run_id = None  # a retry after a lost race needs a fresh id
            # notifies the dequeues when PENDING
            if await fetch_one(self.conn, Q.insert_run, params):
                if params["payload_offloaded"]:
                    await self.conn.execute(
                        Q.insert_packet, {"run_id": params["id"], "payload": payload[0]}
                    )
                return params["id"], False
            # lost a race with a concurrent trigger using the same key: read the winner
        raise EngineError("could not create the run under key contention; retry the request")

    async def insert_plain(self, rows: list[dict[str, Any]]) -> None:
        """Insert runs that need no key lookups (no idempotency or debounce key, payload
        inline) in one pipelined round trip: the bulk path of a batch."""
        if rows:
            async with self.conn.cursor() as cur:
                await cur.executemany(Q.insert_run, rows)

    async def _existing(
        self, task_id: str, options: TriggerOptions, params: dict[str, Any]
    ) -> str | None:
        """The run an idempotency or debounce key maps to, if it should be reused."""
        base = {"environment_id": self.env.id, "task_id": task_id}
        if options.idempotency_key is not None:
            row = await fetch_one(self.conn, 
                Q.find_idempotent_run, {**base, "idempotency_key": options.idempotency_key}
            )
            if row:
                expired = row["idempotency_key_expires_at"] <= datetime.now(UTC)
                if not expired and row["status"] not in RELEASES_KEY:
                    return str(row["id"])
                await self.conn.execute(Q.clear_idempotency_key, {"id": row["id"]})
        if options.debounce is not None:
            row = await fetch_one(self.conn, 
                Q.find_debounced_run, {**base, "debounce_key": options.debounce.key}
            )
            if row:
                await self.conn.execute(
                    Q.push_debounced_run,
                    {
                        **params,
                        "id": row["id"],
                        "trailing": options.debounce.mode == "trailing",
                    },
                )
                return str(row["id"])
        return None


def _is_plain(options: TriggerOptions, payload: tuple[str, str]) -> bool:
    """No key to look up first and nothing to store beside the row."""
    return (
        options.idempotency_key is None
        and options.debounce is None
        and len(payload[0]) <= OFFLOAD_BYTES
    )


async def _claim_request(
    conn: Conn, env: Environment, key: str | None, response: dict[str, Any]
) -> Any:
    """For a retried HTTP request: the response already given. Otherwise claim the key with
    ``response`` (what this request will answer unless it changes) and return None."""
    if key is None:
        return None
    check_text(key, "x-trigger-request-idempotency-key")
    params = {"environment_id": env.id, "request_key": key, "response": Jsonb(response)}
    if await fetch_one(conn, Q.claim_request_key, params):
        return None
    row = await fetch_one(conn, Q.find_request_key, params)
    return row["response"] if row else None


async def _same_request(
    conn: Conn, key: str | None, cached: dict[str, Any], task_ids: set[str], batch: bool
) -> dict[str, Any]:
    """A request key answers again only for the same kind of request on the same tasks:
    reusing it for another task (or a batch for a trigger) is a client bug, not a retry."""
    if batch:
        sent = {str(r.get("taskIdentifier")) for r in cached.get("runs") or []}
        same = "runCount" in cached and sent == task_ids
    else:
        row = None
        if "runCount" not in cached and cached.get("id"):
            row = await fetch_one(conn, Q.run_task_id, {"id": cached["id"]})
        same = row is not None and {row["task_id"]} == task_ids
    if not same:
        raise Conflict(
            f"x-trigger-request-idempotency-key {key!r} was already used for a different "
            "request (another task or kind); use a new key for a new request"
        )
    return dict(cached)


async def _save_request(
    conn: Conn,
    env: Environment,
    key: str | None,
    claimed: dict[str, Any],
    response: dict[str, Any],
) -> None:
    if key is not None and response != claimed:
        await conn.execute(
            Q.save_request_key,
            {"environment_id": env.id, "request_key": key, "response": Jsonb(response)},
        )


async def trigger(
    pool: Pool,
    env: Environment,
    task_id: str,
    body: TriggerBody,
    request_key: str | None = None,
    replayed_from: str | None = None,
) -> dict[str, Any]:
    """Create one run. Returns ``{"id", "isCached"}``."""
    payload = encode_payload(body.payload, body.payload_type)
    planned: dict[str, Any] = {"id": new_id("run"), "isCached": False}
    async with pool.connection() as conn, conn.transaction():
        cached = await _claim_request(conn, env, request_key, planned)
        if cached:
            return await _same_request(conn, request_key, cached, {task_id}, batch=False)
        creator = RunCreator(conn, env)
        await creator.load_definitions([task_id])
        check_payload(task_id, creator.definition(task_id), body.payload, payload[1])
        run_id, is_cached = await creator.create(
            task_id, payload, body.options, replayed_from=replayed_from, run_id=planned["id"]
        )
        response: dict[str, Any] = {"id": run_id, "isCached": is_cached}
        options = body.options
        if options.resume_parent_on_completion or options.journal_seq is not None:
            response.update(
                await _link_to_parent(
                    conn,
                    env,
                    options.parent_run_id,
                    options.journal_seq,
                    task_id,
                    wait=options.resume_parent_on_completion,
                    run_id=run_id,
                    parent_attempt=options.parent_attempt,
                )
            )
        await _save_request(conn, env, request_key, planned, response)
    return response


async def _link_to_parent(
    conn: Conn,
    env: Environment,
    parent_run_id: str | None,
    seq: int | None,
    key: str,
    *,
    wait: bool,
    run_id: str | None = None,
    batch_id: str | None = None,
    parent_attempt: int | None = None,
) -> dict[str, Any]:
    """Journal a child trigger in its parent (so a replay does not trigger it again) and, for
    ``*_and_wait``, create the waitpoint the parent waits on."""
    if parent_run_id is None:
        raise EngineError("resumeParentOnCompletion and journalSeq need parentRunId")
    extra: dict[str, Any] = {}
    waitpoint_id = None
    if wait:
        found = None
        if run_id is not None:  # a cached child may already have its waitpoint
            found = await fetch_one(conn, Q.run_waitpoint_of, {"run_id": run_id})
        if found is None:
            found, _ = await waitpoints.create(
                conn, env, "RUN" if run_id else "BATCH", run_id=run_id, batch_id=batch_id
            )
        waitpoint_id = found["id"]
        extra["waitpointId"] = waitpoint_id
        # the children may be finished already (idempotent hits)
        if run_id is not None:
            await conn.execute(Q.complete_finished_run_waitpoints, {"run_id": run_id})
        else:
            await conn.execute(Q.complete_finished_batch_waitpoint, {"batch_id": batch_id})
    if seq is not None:
        kind = ("batch_trigger" if batch_id else "trigger") + ("_and_wait" if wait else "")
        outcome = {"id": run_id or batch_id, "waitpointId": waitpoint_id}
        attempt = await waitpoints.lock_parent(conn, env, parent_run_id, parent_attempt)
        await waitpoints.record(
            conn, parent_run_id, attempt, seq, kind, key, waitpoint_id, outcome
        )
    return extra


async def batch_trigger(
    pool: Pool,
    env: Environment,
    items: list[BatchItem],
    request_key: str | None = None,
    options: BatchOptions | None = None,
) -> dict[str, Any]:
    """Create a batch of runs, possibly of several tasks, in one transaction.

    An item that cannot be triggered (unknown task, payload too big, bad payload) gets an
    ``error`` entry in ``runs`` at its index; the others are created. A batch its parent waits
    for (``resumeParentOnCompletion``) is refused whole instead: the parent gets one result per
    item, in item order, or an error saying which items were refused.
    """
    async with pool.connection() as conn, conn.transaction():
        cached = await _claim_request(conn, env, request_key, {})
        if cached:
            tasks = {item.task or "" for item in items}
            return await _same_request(conn, request_key, cached, tasks, batch=True)
        creator = RunCreator(conn, env)
        await creator.load_definitions(sorted({item.task for item in items if item.task}))
        batch_id = new_id("batch")
        await conn.execute(
            Q.insert_batch, {"id": batch_id, "environment_id": env.id, "run_count": len(items)}
        )
        runs: list[dict[str, Any]] = []
        plain: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            task_id = item.task or ""
            try:
                payload = encode_payload(item.payload, item.payload_type)
                check_payload(task_id, creator.definition(task_id), item.payload, payload[1])
                if _is_plain(item.options, payload):
                    row = await creator.params(
                        task_id, payload, item.options, batch_id, batch_index=index
                    )
                    row["id"] = new_id("run")
                    plain.append(row)
                    runs.append({"id": row["id"], "taskIdentifier": task_id, "isCached": False})
                    continue
                async with conn.transaction():  # a savepoint: one bad item spoils nothing else
                    run_id, is_cached = await creator.create(
                        task_id, payload, item.options, batch_id, batch_index=index
                    )
            except EngineError as exc:
                runs.append({"taskIdentifier": task_id, "error": exc.message})
                continue
            runs.append({"id": run_id, "taskIdentifier": task_id, "isCached": is_cached})
        waited = options is not None and options.resume_parent_on_completion
        refused = [(i, r) for i, r in enumerate(runs) if "id" not in r]
        if waited and refused:
            # The parent reads one result per item, in item order: a refused item would have
            # none (and shift the others), so the whole batch is refused and nothing runs.
            raise EngineError(
                "batch trigger-and-wait refused, nothing was triggered: "
                + "; ".join(f"item {i} ({r['taskIdentifier']}): {r['error']}" for i, r in refused)
            )
        await creator.insert_plain(plain)
        response: dict[str, Any] = {"id": batch_id, "runCount": len(items), "runs": runs}
        if options and (options.resume_parent_on_completion or options.journal_seq is not None):
            key = ",".join(sorted({item.task or "" for item in items}))
            response.update(
                await _link_to_parent(
                    conn,
                    env,
                    options.parent_run_id,
                    options.journal_seq,
                    key,
                    wait=options.resume_parent_on_completion,
                    batch_id=batch_id,
                    parent_attempt=options.parent_attempt,
                )
            )
        await _save_request(conn, env, request_key, {}, response)
    return response
