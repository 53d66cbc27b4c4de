"""Creating runs: one trigger or a batch, with idempotency keys, debounce, delays, TTLs,
version pins, queues and concurrency keys (docs/triggerdev-semantics.md, "Idempotency keys",
"Trigger options", "Queues")."""

from __future__ import annotations

from psycopg.types.json import Jsonb

from worker.common.limits import check_text
from worker.engine import request_keys, waitpoints
from worker.engine.db import Conn, Pool, Row, fetch_one, one_statement, one_trip
from worker.engine.errors import EngineError
from worker.engine.handoff import Handoff, offered
from worker.engine.ids import new_id
from worker.engine.keys import Environment
from worker.engine.models import BatchSpec, ParentLink, TriggerSpec
from worker.engine.payload_schema import check_payload
from worker.engine.queries import Q
from worker.engine.request_keys import BatchEntry, TriggeredBatch, TriggeredRun
from worker.engine.run_creator import LIVE_WORKER_SECONDS as LIVE_WORKER_SECONDS  # leases.py
from worker.engine.run_creator import RunCreator, encode_payload, is_plain, run_row
from worker.engine.task_defs import CachedTask, TaskDefinitions


async def trigger(
    pool: Pool,
    env: Environment,
    spec: TriggerSpec,
    request_key: str | None = None,
    replayed_from: str | None = None,
    handoff: Handoff | None = None,
    definitions: TaskDefinitions | None = None,
    run_id: str | None = None,
) -> TriggeredRun:
    """Create one run: ``run_id`` if given, else a new id (an idempotency key's run or a retried
    request's answer may have another). With ``handoff``, a worker long-polling in this process
    gets the run leased in the same transaction (engine/handoff.py). ``definitions``: the task
    definitions this process caches (engine/task_defs.py); a plain trigger whose task is in it
    costs one round trip, its request key (``x-trigger-request-idempotency-key``, which the SDKs
    send with every trigger) claimed in the same statement."""
    task_id = spec.task
    payload = encode_payload(spec.payload, spec.payload_type)
    planned: TriggeredRun = {"id": run_id or new_id("run"), "isCached": False}
    if is_plain(spec.options, payload) and not spec.options.parent.links:
        known = None
        if definitions is not None and spec.options.lock_to_version is None:
            known = definitions.get(env.id, task_id)
        if known is not None:
            answer = await _trigger_cached(pool, env, spec, payload, known, planned,
                                           request_key, replayed_from, handoff)
            if answer is not None:
                return answer
            assert definitions is not None
            definitions.drop(env.id)  # the definition changed: read it again
        if request_key is None and await _trigger_plain(
                pool, env, spec, payload, planned["id"], replayed_from, handoff, definitions):
            return planned
    async with offered(handoff, env.id) as offer, pool.connection() as conn, \
            conn.transaction():
        cached = await request_keys.claim(conn, env, request_key, planned)
        if cached and request_key:
            return await request_keys.replayed_run(conn, request_key, cached, task_id)
        creator = RunCreator(conn, env)
        generation = definitions.generation if definitions is not None else 0
        await creator.load_definitions([task_id])
        if definitions is not None:  # for the next plain triggers (with a request key)
            _remember(definitions, env, creator, task_id, generation)
        check_payload(task_id, creator.definition(task_id), spec.payload, payload[1])
        run_id, is_cached = await creator.create(
            task_id, payload, spec.options, replayed_from=replayed_from, run_id=planned["id"]
        )
        response: TriggeredRun = {"id": run_id, "isCached": is_cached}
        parent = spec.options.parent
        if parent.journaled:
            waitpoint_id = await _link_to_parent(conn, env, parent, task_id, run_id=run_id)
            if waitpoint_id is not None:
                response["waitpointId"] = waitpoint_id
        await request_keys.save(conn, env, request_key, planned, response)
        if creator.queued and not is_cached:
            await offer.lease(conn)
    return response


def _remember(definitions: TaskDefinitions, env: Environment, creator: RunCreator,
              task_id: str, generation: int) -> None:
    """Cache the definition ``creator`` read (``generation``: the cache's before the read, so
    a change heard meanwhile wins), for the next plain triggers of this process."""
    if task_id in creator.stamps:
        definitions.put(generation, env.id,
                        {task_id: CachedTask(creator.definition(task_id), creator.stamps[task_id])})


async def _trigger_cached(pool: Pool, env: Environment, spec: TriggerSpec,
                          payload: tuple[str, str], cached: CachedTask, planned: TriggeredRun,
                          request_key: str | None, replayed_from: str | None,
                          handoff: Handoff | None) -> TriggeredRun | None:
    """The common trigger with its task's definition cached in this process: one statement
    (db.one_statement: the insert, committed synchronously). The insert reads what must be
    current (a live worker with the task, the queue declared) and checks that the cached
    definition still is (insert_cached_run). With a long-poll of this process waiting, the
    insert leases the run to it itself in the one-run case (insert_cached_run_leased, under
    the pick's lock); otherwise the long-poll looks by itself. A request key is claimed in the
    insert's statement; one an earlier try of the request claimed answers that try's answer.
    None if nothing was inserted and no earlier try answered: the definition changed."""
    check_payload(spec.task, cached.definition, spec.payload, payload[1])
    params = run_row(env, spec.task, cached.definition, payload, spec.options, ready="PENDING",
                     replayed_from=replayed_from)
    params["id"], params["stamp"] = planned["id"], cached.stamp
    params["live_seconds"] = LIVE_WORKER_SECONDS
    params["request_key"], params["answer"] = request_key, Jsonb(planned)
    if request_key is not None:
        check_text(request_key, request_keys.HEADER)
    async with offered(handoff, env.id) as offer:
        lease = offer.claim() if params["status"] == "PENDING" else None
        if lease is None:  # notifies the dequeues if inserted PENDING
            query, values = Q.insert_cached_run, params
        else:
            query, values = Q.insert_cached_run_leased, {**params, **lease}
        rows = await one_statement(pool, query, values)
        row = rows[0] if rows else None
        if lease is not None:
            offer.leased([row] if row is not None and row["status"] == "EXECUTING" else [])
    if row is not None:
        return planned
    if request_key is None:
        return None
    async with pool.connection() as conn:  # a retried request: what its first try answered
        found = await fetch_one(conn, Q.find_request_key,
                                {"environment_id": env.id, "request_key": request_key})
        if found is None:  # the key is free: the definition changed
            return None
        return await request_keys.replayed_run(conn, request_key, found["response"], spec.task)


async def _trigger_plain(pool: Pool, env: Environment, spec: TriggerSpec,
                         payload: tuple[str, str], run_id: str,
                         replayed_from: str | None, handoff: Handoff | None,
                         definitions: TaskDefinitions | None = None) -> bool:
    """The common trigger (no key to look up, no parent to write to, payload inline) in two
    round trips (db.one_trip): the task's definition, then the insert with the
    commit, a synchronous one (a 2xx trigger survives a crash). The definition read goes to
    ``definitions`` for the next triggers. False if the insert did not happen (for the general
    path to try)."""
    generation = definitions.generation if definitions is not None else 0
    async with offered(handoff, env.id) as offer:
        async with one_trip(pool) as conn:
            creator = RunCreator(conn, env)
            await creator.load_definitions([spec.task])
            if definitions is not None:
                _remember(definitions, env, creator, spec.task, generation)
            check_payload(spec.task, creator.definition(spec.task), spec.payload, payload[1])
            params = await creator.params(spec.task, payload, spec.options,
                                          replayed_from=replayed_from)
            params["id"] = run_id
            inserted = await conn.execute(Q.insert_run, params)  # notifies the dequeues
            if params["status"] == "PENDING":
                # leases whatever is next: this run, if nothing before
                await offer.lease(conn)
        return await inserted.fetchone() is not None


async def _link_to_parent(
    conn: Conn,
    env: Environment,
    parent: ParentLink,
    key: str,
    *,
    run_id: str | None = None,
    batch_id: str | None = None,
) -> str | None:
    """Journal a child trigger in its parent (so a replay does not trigger it again) and, for
    ``*_and_wait``, create the waitpoint the parent waits on (its id is returned)."""
    parent_run_id, seq, wait = parent.run_id, parent.journal_seq, parent.resume_on_completion
    if parent_run_id is None:
        raise EngineError("resumeParentOnCompletion and journalSeq need parentRunId")
    waitpoint_id: str | None = None
    if wait:
        found = None
        if run_id is not None:  # a cached child may already have its waitpoint
            found = await fetch_one(conn, Q.run_waitpoint_of, {"run_id": run_id})
        if found is None:
            found, _ = await waitpoints.create(
                conn, env, "RUN" if run_id else "BATCH", run_id=run_id, batch_id=batch_id
            )
        waitpoint_id = str(found["id"])
        # the children may be finished already (idempotent hits)
        if run_id is not None:
            await conn.execute(Q.complete_finished_run_waitpoints, {"run_id": run_id})
        else:
            await conn.execute(Q.complete_finished_batch_waitpoint, {"batch_id": batch_id})
    if seq is not None:
        kind = ("batch_trigger" if batch_id else "trigger") + ("_and_wait" if wait else "")
        outcome = {"id": run_id or batch_id, "waitpointId": waitpoint_id}
        attempt = await waitpoints.lock_parent(conn, env, parent_run_id, parent.attempt)
        await waitpoints.record(
            conn, parent_run_id, attempt, seq, kind, key, waitpoint_id, outcome
        )
    return waitpoint_id


async def batch_trigger(
    pool: Pool,
    env: Environment,
    batch: BatchSpec,
    request_key: str | None = None,
) -> TriggeredBatch:
    """Create a batch of runs, possibly of several tasks, in one transaction.

    An item that cannot be triggered (unknown task, payload too big, bad payload) gets an
    ``error`` entry in ``runs`` at its index; the others are created. A batch its parent waits
    for (``resumeParentOnCompletion``) is refused whole instead: the parent gets one result per
    item, in item order, or an error saying which items were refused.
    """
    items = batch.expanded_items()
    async with pool.connection() as conn, conn.transaction():
        cached = await request_keys.claim(conn, env, request_key, request_keys.NO_ANSWER)
        if cached and request_key:
            tasks = {item.task for item in items}
            return await request_keys.replayed_batch(conn, request_key, cached, tasks)
        creator = RunCreator(conn, env)
        await creator.load_definitions(sorted({item.task for item in items if item.task}))
        batch_id = new_id("batch")
        await conn.execute(
            Q.insert_batch, {"id": batch_id, "environment_id": env.id, "run_count": len(items)}
        )
        runs: list[BatchEntry] = []
        plain: list[Row] = []
        for index, item in enumerate(items):
            task_id = item.task
            try:
                payload = encode_payload(item.payload, item.payload_type)
                check_payload(task_id, creator.definition(task_id), item.payload, payload[1])
                if is_plain(item.options, payload):
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
        waited = batch.parent.resume_on_completion
        refused = [(i, r) for i, r in enumerate(runs) if "id" not in r]
        if waited and refused:
            # The parent reads one result per item, in item order: a refused item would have
            # none (and shift the others), so the whole batch is refused and nothing runs.
            raise EngineError(
                "batch trigger-and-wait refused, nothing was triggered: "
                + "; ".join(f"item {i} ({r['taskIdentifier']}): {r.get('error')}"
                            for i, r in refused)
            )
        await creator.insert_plain(plain)
        response: TriggeredBatch = {"id": batch_id, "runCount": len(items), "runs": runs}
        if batch.parent.journaled:
            key = ",".join(sorted({item.task for item in items}))
            waitpoint_id = await _link_to_parent(conn, env, batch.parent, key, batch_id=batch_id)
            if waitpoint_id is not None:
                response["waitpointId"] = waitpoint_id
        await request_keys.save(conn, env, request_key, request_keys.NO_ANSWER, response)
    return response
