"""The trace waterfall of a run's page: the span tree of docs/api.md ("GET
/api/v1/runs/{runId}/trace") as rows with an offset and a width in thousandths of the trace's
span, for SVG bars (the CSP forbids inline styles)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from worker.engine import trace_view
from worker.engine.db import Pool
from worker.engine.keys import Environment

SCALE = 1000


@dataclass(frozen=True)
class SpanBar:
    id: str
    name: str
    kind: str
    depth: int
    run_id: str
    start: datetime
    duration_ms: float
    offset: int  # 0..SCALE
    width: int  # 1..SCALE
    is_error: bool
    is_partial: bool
    details: dict[str, Any]  # attributes, events, status message, logs


@dataclass(frozen=True)
class Waterfall:
    spans: list[SpanBar]
    total_ms: float
    truncated: bool


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def load(pool: Pool, env: Environment, run_id: str) -> Waterfall:
    tree = await trace_view.trace_tree(pool, env, run_id)
    flat = trace_view.flatten(tree)
    times = [(_time(s["data"]["startTime"]), _time(s["data"]["endTime"])) for s in flat]
    starts = [s for s, _ in times if s is not None]
    ends = [e for _, e in times if e is not None]
    if not starts:
        return Waterfall([], 0.0, False)
    first, last = min(starts), max([*ends, *starts])
    total = max((last - first).total_seconds() * 1000, 0.001)
    bars = []
    for span, (start, end) in zip(flat, times, strict=True):
        if start is None:
            continue
        data = span["data"]
        offset = int((start - first).total_seconds() * 1000 / total * SCALE)
        width = int(((end or last) - start).total_seconds() * 1000 / total * SCALE)
        details = {
            "status": data.get("status"),
            "statusMessage": data.get("statusMessage"),
            "attributes": data.get("properties"),
            "events": data.get("events"),
            "logs": [f"{line['level']}: {line['message']}" for line in data.get("logs", [])],
        }
        bars.append(SpanBar(
            id=span["id"], name=span["message"], kind=data.get("kind", "span"),
            depth=span["depth"], run_id=span["runId"], start=start,
            duration_ms=float(data.get("durationMs") or 0.0),
            offset=min(offset, SCALE - 1), width=max(1, min(width, SCALE - offset)),
            is_error=bool(data.get("isError")), is_partial=bool(data.get("isPartial")),
            details={k: v for k, v in details.items() if v},
        ))
    return Waterfall(bars, total, bool(tree["trace"]["truncated"]))
