"""The markdown table: one row per metric, medians with min–max, ratios ours/peer, targets."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.common import Series

PEERS = ("celery", "procrastinate")
LABELS = {"ours": "trigger-worker", "celery": "Celery", "procrastinate": "Procrastinate"}


@dataclass
class Row:
    section: str
    metric: str
    unit: str
    values: dict[str, Series] = field(default_factory=dict)
    #: (text, check(ours, {peer: value}) -> bool | None)
    target: tuple[str, Callable[[float, dict[str, float]], bool | None]] | None = None

    def series(self, system: str) -> Series:
        return self.values.setdefault(system, Series())


def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if unit in ("/s",):
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(series: Series | None, unit: str) -> str:
    if series is None or series.median is None:
        return "–"
    if len(series.values) == 1:
        return fmt(series.median, unit)
    return f"{fmt(series.median, unit)} ({fmt(series.lo, unit)}–{fmt(series.hi, unit)})"


def render(rows: list[Row], systems: list[str], header: dict[str, Any]) -> str:
    peers = [p for p in PEERS if p in systems]
    cols = ["metric", *(LABELS[s] for s in systems), *(f"ours/{LABELS[p]}" for p in peers),
            "target", "met?"]
    out = [f"# Benchmarks ({header['when']})", "",
           f"nproc {header['nproc']}, load average before {header['load_before']}, "
           f"after {header['load_after']}; Python {header['python']}; "
           f"N = {header['n']}, latency triggers = {header['latency_n']}, "
           f"repetitions = {header['reps']}. Cells: median (min–max over repetitions).", ""]
    if header.get("notes"):
        out += [f"- {note}" for note in header["notes"]] + [""]
    section = None
    for row in rows:
        if row.section != section:
            section = row.section
            out += [f"## {section}", "", "| " + " | ".join(cols) + " |",
                    "|" + "|".join("---" for _ in cols) + "|"]
        ours = row.values.get("ours")
        ours_med = ours.median if ours else None
        ratios = []
        peer_meds: dict[str, float] = {}
        for p in peers:
            s = row.values.get(p)
            if s and s.median and ours_med is not None:
                peer_meds[p] = s.median
                ratios.append(f"{ours_med / s.median:.2f}×")
            else:
                ratios.append("–")
        target, met = "", ""
        if row.target:
            target = row.target[0]
            verdict = row.target[1](ours_med, peer_meds) if ours_med is not None else None
            met = {True: "yes", False: "**no**", None: "–"}[verdict]
        cells = [f"{row.metric} ({row.unit})", *(cell(row.values.get(s), row.unit)
                                                  for s in systems), *ratios, target, met]
        out.append("| " + " | ".join(cells) + " |")
        # a blank line ends a table before the next section heading
        nxt = rows.index(row) + 1
        if nxt >= len(rows) or rows[nxt].section != section:
            out.append("")
    return "\n".join(out)
