"""The dequeued run built from its database row: the one builder of that message (docs/protocol.md,
``/dequeue``), for a lease and for an attempt retried in place alike."""

from __future__ import annotations

from datetime import datetime

from psycopg.rows import DictRow

from worker.common import trace_context
from worker.common.machines import DEFAULT_MACHINE
from worker.common.protocol import (
    AttemptInfo,
    DequeuedRun,
    EnvironmentInfo,
    MachineInfo,
    ProjectInfo,
    RunContext,
    RunInfo,
    TaskInfo,
)
from worker.engine.keys import Environment


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def dequeued_run(row: DictRow, env: Environment) -> DequeuedRun:
    """A leased run from a row of the ``dequeue`` / ``retry_in_place`` queries. Its journal is
    empty here: the caller adds the attempt's own (:meth:`DequeuedRun.with_journal`)."""
    machine = row["machine"] or DEFAULT_MACHINE
    resumed = bool(row["resumed"])
    ctx = RunContext(
        run=RunInfo(
            id=row["id"], tags=row["tags"], created_at=_iso(row["created_at"]),
            started_at=_iso(row["started_at"]), idempotency_key=row["idempotency_key"],
            max_attempts=row["max_attempts"], version=row["version_name"],
            max_duration=row["max_duration"], priority=0, is_test=row["is_test"],
            parent_task_run_id=row["parent_run_id"], root_task_run_id=row["root_run_id"],
            metadata=row["metadata"],
        ),
        attempt=AttemptInfo(row["attempt_number"], _iso(row["updated_at"])),
        task=TaskInfo(row["task_id"], row["task_file"]),
        queue=row["queue"],
        environment=EnvironmentInfo(env.id, env.slug, env.type),
        project=ProjectInfo(env.project_id, env.project_ref),
        machine=MachineInfo.preset(machine),
        batch_id=row["batch_id"] or None,
        worker_instance_id=str(row["lease_owner"]),
    )
    return DequeuedRun(
        run_id=row["id"], attempt_number=row["attempt_number"], task_id=row["task_id"],
        version_id=str(row["version_id"]), version=row["version_name"],
        payload=row["run_payload"], payload_type=row["payload_type"],
        max_attempts=row["max_attempts"], retry=row["retry"], max_duration=row["max_duration"],
        machine=machine, ctx=ctx,
        is_final_attempt=row["attempt_number"] >= row["max_attempts"],
        lease_expires_at=_iso(row["lease_expires_at"]),
        resumed=resumed,
        # execution time the attempt used before its checkpoint: max_duration spans resumes
        execution_ms=int(row.get("attempt_execution_ms") or 0) if resumed else 0,
        # the run's span: the parent of this attempt's span (worker/runtime/telemetry.py)
        traceparent=trace_context.of_row(row).traceparent,
    )
