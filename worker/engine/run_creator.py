"""Creating runs inside a transaction: the task's definition, the version pin, the queue, the
parent, debounce and idempotency keys, the payload (offloaded when big). ``triggering.py`` and
the cron service drive it (docs/triggerdev-semantics.md, "Trigger options", "Queues")."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from psycopg.types.json import Jsonb

from worker.common import trace_context
from worker.common.limits import LimitError, check_json, text_depth_may_exceed
from worker.engine.db import Conn, Row, fetch_all, fetch_one
from worker.engine.errors import EngineError, NotFound, PayloadTooLarge
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.models import MAX_PAYLOAD_BYTES, DebounceMode, RunOptions, parse_duration
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


def encode_payload(payload: object, payload_type: str | None) -> tuple[str, str]:
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
        #: each definition's stamp (the tasks row's xmin: engine/task_defs.py)
        self.stamps: dict[str, str] = {}
        #: the last run :meth:`create` inserted is PENDING: a worker may lease it at once
        self.queued = False

    async def load_definitions(self, task_ids: list[str]) -> None:
        params = {"environment_id": self.env.id, "task_ids": task_ids,
                  "live_seconds": LIVE_WORKER_SECONDS}
        for row in await fetch_all(self.conn, Q.find_tasks, params):
            self._definitions[row["task_id"]] = row["definition"]
            self.stamps[row["task_id"]] = row["stamp"]
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

    async def _parent(self, parent_run_id: str | None) -> Row | None:
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
        options: RunOptions,
        batch_id: str | None = None,
        replayed_from: str | None = None,
        batch_index: int | None = None,
    ) -> Row:
        """The insert_run parameters of one run (no id yet)."""
        definition = self.definition(task_id)
        ready = await self._ready_status(task_id, queue_of(task_id, definition, options))
        parent = await self._parent(options.parent.run_id)
        return run_row(self.env, task_id, definition, payload, options, ready=ready,
                       parent=parent, version_id=await self._version_id(options.lock_to_version),
                       batch_id=batch_id, replayed_from=replayed_from, batch_index=batch_index)

    async def create(
        self,
        task_id: str,
        payload: tuple[str, str],
        options: RunOptions,
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
                self.queued = params["status"] == "PENDING"
                if params["payload_offloaded"]:
                    await self.conn.execute(
                        Q.insert_packet, {"run_id": params["id"], "payload": payload[0]}
                    )
                return params["id"], False
            # lost a race with a concurrent trigger using the same key: read the winner
        raise EngineError("could not create the run under key contention; retry the request")

    async def insert_plain(self, rows: list[Row]) -> None:
        """Insert runs that need no key lookups (no idempotency or debounce key, payload
        inline) in one pipelined round trip: the bulk path of a batch."""
        if rows:
            async with self.conn.cursor() as cur:
                await cur.executemany(Q.insert_run, rows)

    async def _existing(
        self, task_id: str, options: RunOptions, params: Row
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
                        "trailing": options.debounce.mode is DebounceMode.trailing,
                    },
                )
                return str(row["id"])
        return None


def _task_ttl(definition: Mapping[str, object]) -> timedelta | None:
    """The ttl a task declares (a duration or seconds; 0 or "0": none)."""
    ttl = definition.get("ttl")
    if ttl in (0, "0") or not isinstance(ttl, str | int | float):
        return None
    return parse_duration(ttl, "ttl")


def queue_of(task_id: str, definition: Mapping[str, Any], options: RunOptions) -> str:
    """The queue a run goes to: the trigger's, else its task's, else the task's own."""
    return (options.queue or (definition.get("queue") or {}).get("name")
            or f"task/{task_id}")


def run_row(env: Environment, task_id: str, definition: Mapping[str, Any],
            payload: tuple[str, str], options: RunOptions, *, ready: str,
            parent: Row | None = None, version_id: str | None = None,
            batch_id: str | None = None, replayed_from: str | None = None,
            batch_index: int | None = None) -> Row:
    """The insert_run parameters of one run (no id yet), without a database look-up: the
    status of a run not delayed is ``ready`` (PENDING or PENDING_VERSION)."""
    now = datetime.now(UTC)
    run_at = options.run_at()
    debounce = options.debounce
    if debounce is not None:
        run_at = now + debounce.delay
    ttl = options.ttl if options.ttl is not None else _task_ttl(definition)
    expires_at = (run_at or now) + ttl if ttl else None
    offloaded = len(payload[0]) > OFFLOAD_BYTES
    parent_trace = trace_context.of_row(parent) if parent else None
    trace = trace_context.for_new_run(parent_trace.trace_id if parent_trace else None,
                                      parent_trace.span_id if parent_trace else None)
    return {
        "environment_id": env.id,
        "task_id": task_id,
        "status": "DELAYED" if run_at else ready,
        "payload": None if offloaded else payload[0],
        "payload_type": payload[1],
        "payload_offloaded": offloaded,
        "queue": queue_of(task_id, definition, options),
        "concurrency_key": options.concurrency_key or "",
        "priority_ms": round(options.priority * 1000),
        "run_at": run_at,
        "expires_at": expires_at,
        "max_attempts": options.max_attempts,
        "max_duration": options.max_duration,
        "machine": options.machine,
        "version_id": version_id,
        "idempotency_key": options.idempotency_key,
        "idempotency_key_expires_at": options.idempotency_expiry(),
        "tags": list(options.tags),
        "metadata": Jsonb(options.metadata) if options.metadata is not None else None,
        "batch_id": batch_id,
        "parent_run_id": options.parent.run_id,
        "root_run_id": str(parent["root_id"]) if parent else None,
        "is_test": options.test,
        "debounce_key": debounce.key if debounce else None,
        "debounce_deadline": (
            now + debounce.max_delay if debounce and debounce.max_delay is not None else None
        ),
        "replayed_from": replayed_from,
        "batch_index": batch_index,
        "trace_id": trace.trace_id,
        "span_id": trace.span_id,
        "parent_span_id": trace.parent_span_id,
    }


def is_plain(options: RunOptions, payload: tuple[str, str]) -> bool:
    """No key to look up first and nothing to store beside the row."""
    return (
        options.idempotency_key is None
        and options.debounce is None
        and len(payload[0]) <= OFFLOAD_BYTES
    )


