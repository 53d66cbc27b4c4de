"""A run's page, as typed values: the run, its timeline (triggered, delays, attempts, retries
with their delay, waits, the end), relatives, what it waits on, and its logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from worker.api.dashboard import waterfall
from worker.api.dashboard.waterfall import Waterfall
from worker.api.presenters import decode_packet
from worker.common.statuses import API_STATUS, FINAL_STATUSES
from worker.engine import runs
from worker.engine.db import Pool, Row, fetch_all
from worker.engine.keys import Environment
from worker.engine.queries import Q

LEVELS = ("TRACE", "DEBUG", "LOG", "INFO", "WARN", "ERROR")


@dataclass(frozen=True)
class Event:
    at: datetime
    label: str
    detail: str = ""
    tone: str = "info"  # info | ok | bad | wait


@dataclass(frozen=True)
class Wait:
    id: str
    type: str
    status: str
    until: datetime | None
    target: str | None  # the child run or batch waited on


@dataclass
class RunDetail:
    run: Row
    status: str
    payload: Any
    output: Any
    error: dict[str, Any] | None
    attempts: list[dict[str, Any]]
    timeline: list[Event]
    children: list[dict[str, Any]]
    waits: list[Wait]
    logs: list[dict[str, Any]] = field(default_factory=list)
    trace: Waterfall | None = None

    @property
    def final(self) -> bool:
        return self.run["status"] in FINAL_STATUSES

    @property
    def delayed(self) -> bool:
        return self.run["status"] == "DELAYED"

    @property
    def waiting_on(self) -> list[Wait]:
        return [w for w in self.waits if w.status != "COMPLETED"]

    @property
    def watch(self) -> str:
        """Run ids whose changes refresh this page: the run and its children."""
        return " ".join([self.run["id"], *(c["id"] for c in self.children)])


def _timeline(run: Row, waits: list[dict[str, Any]]) -> list[Event]:
    events = [Event(run["created_at"], "Triggered", f"queue {run['queue']}")]
    if run.get("run_at") and run["status"] == "DELAYED":
        events.append(Event(run["created_at"], "Delayed", f"until {run['run_at']:%H:%M:%S}"))
    previous_end: datetime | None = None
    for attempt in run["attempts"]:
        if previous_end is not None:
            gap = (attempt["started_at"] - previous_end).total_seconds()
            events.append(Event(previous_end, "Retrying", f"after a {gap:.1f} s delay", "wait"))
        events.append(Event(attempt["started_at"], f"Attempt {attempt['number']} started"))
        if attempt["completed_at"] is not None:
            error = attempt["error"] or {}
            message = error.get("message") or error.get("raw") or ""
            tone = "ok" if attempt["status"] == "COMPLETED" else "bad"
            events.append(
                Event(
                    attempt["completed_at"],
                    f"Attempt {attempt['number']} {attempt['status'].lower()}",
                    str(message)[:300],
                    tone,
                )
            )
            previous_end = attempt["completed_at"] if attempt["status"] == "FAILED" else None
    for wait in waits:
        what = wait["run_id"] or wait["batch_id"] or wait["id"]
        events.append(Event(wait["created_at"], f"Waiting ({wait['type'].lower()})", what, "wait"))
    if run["status"] in FINAL_STATUSES and run.get("completed_at"):
        status = API_STATUS[run["status"]]
        tone = "ok" if status == "COMPLETED" else "bad"
        events.append(Event(run["completed_at"], status.capitalize(), "", tone))
    return sorted(events, key=lambda e: e.at)


async def load(
    pool: Pool, env: Environment, run_id: str, level: str | None, search: str | None
) -> RunDetail:
    run = await runs.retrieve(pool, env, run_id)
    params = {"id": run_id, "environment_id": env.id}
    async with pool.connection() as conn:
        children = await fetch_all(conn, Q.dash_run_children, params)
        wait_rows = await fetch_all(conn, Q.dash_run_waits, params)
        logs = await fetch_all(
            conn,
            Q.dash_run_logs,
            {"id": run_id, "level": level if level in LEVELS else None,
             "search": search or None},
        )
    waits = [
        Wait(w["id"], w["type"], w["status"], w["complete_after"], w["run_id"] or w["batch_id"])
        for w in wait_rows
    ]
    return RunDetail(
        run=run,
        status=API_STATUS.get(run["status"]) or str(run["status"]),
        payload=decode_packet(run["payload"], run["payload_type"]),
        output=decode_packet(run["output"], run["output_type"]),
        error=run["error"],
        attempts=run["attempts"],
        timeline=_timeline(run, wait_rows),
        children=children,
        waits=waits,
        logs=logs,
        trace=await waterfall.load(pool, env, run_id),
    )
