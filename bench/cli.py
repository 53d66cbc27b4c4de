"""``python -m bench``: every scenario, every reachable system, one markdown table.

Scenarios (issue 7): throughput (bulk enqueue N, then drain with one worker replica), latency
(sequential triggers on an idle warm worker), cold start, warm vs cold execution (ours), memory.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_PG, DEFAULT_REDIS, Missing, machine_info, percentile
from bench.report import Row, render
from bench.systems import Options

ALL_SYSTEMS = ("ours", "celery", "procrastinate")
ALL_SCENARIOS = ("throughput", "latency", "cold", "warm", "memory")
PCTS = (50, 90, 99, 100)


def _system(name: str, opts: Options) -> Any:
    if name == "ours":
        from bench.systems.ours import Ours

        return Ours(opts)
    if name == "celery":
        from bench.systems.celery_peer import CeleryPeer

        return CeleryPeer(opts)
    from bench.systems.procrastinate_peer import ProcrastinatePeer

    return ProcrastinatePeer(opts)


def _le(limit: float) -> Any:
    return lambda ours, peers: ours <= limit


def build_rows(concurrency: int = 10) -> dict[str, Row]:
    """The table's rows, with the targets of issue 16 (docs/benchmarks.md)."""
    rows: dict[str, Row] = {}

    def add(key: str, section: str, metric: str, unit: str, target: Any = None) -> None:
        rows[key] = Row(section, metric, unit, target=target)

    tp = "Throughput (no-op task, bulk enqueue then drain, one worker replica)"
    add("enqueue", tp, "enqueue", "/s")
    # process for process (--concurrency 2, as Celery's prefork 2): level; at our default: 2×
    factor = 1.0 if concurrency <= 2 else 2.0
    add("drain", tp, "drain", "/s", (f"≥ {factor:g}× Celery", lambda o, p: (
        None if "celery" not in p else o >= factor * p["celery"])))
    lat = "Latency (idle warm worker, sequential triggers)"
    for pct in PCTS:
        name = "max" if pct == 100 else f"p{pct}"
        target = None
        if pct == 50:
            target = ("≤ 2 ms and ≤ 2× Celery",
                      lambda o, p: o <= 2.0 and o <= 2 * p.get("celery", 1e9))
        elif pct == 99:
            target = ("≤ 5 ms", _le(5.0))
        add(f"start_{name}", lat, f"trigger → body starts {name}", "ms", target)
    for pct in PCTS:
        name = "max" if pct == 100 else f"p{pct}"
        add(f"result_{name}", lat, f"trigger → result visible {name}", "ms",
            ("≤ 3 ms", _le(3.0)) if pct == 50 else None)
    add("cold", "Cold start (worker command launched with one run queued → run finished)",
        "cold start", "s", ("≤ 0.3 s", _le(0.3)))
    wc = "Warm vs cold execution (ours: warm executor vs fresh interpreter per run)"
    add("warm_ms", wc, "warm executor, per run", "ms")
    add("cold_ms", wc, "fresh interpreter, per run", "ms")
    add("warm_ratio", wc, "cold / warm", "×", ("≥ 50×", lambda o, p: o >= 50))
    mem = ("Memory (idle worker; executor = our executor / Celery prefork child / "
           "Procrastinate worker process)")
    add("ex_uss", mem, "per executor USS", "MiB", ("≤ 5 MiB", _le(5.0)))
    add("ex_pss", mem, "per executor PSS", "MiB")
    add("sup_uss", mem, "supervisor / parent USS", "MiB", ("≤ 20 MiB", _le(20.0)))
    add("sup_pss", mem, "supervisor / parent PSS", "MiB")
    add("zyg_uss", mem, "zygote USS", "MiB")
    return rows


def run_system(name: str, opts: Options, scenarios: list[str], reps: int,
               rows: dict[str, Row], notes: list[str]) -> None:
    system = _system(name, opts)
    log = lambda msg: print(f"[{name}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        log("setting up")
        system.setup()
    except Missing as exc:
        notes.append(f"{system.label} skipped: {exc}")
        log(f"SKIPPED: {exc}")
        _teardown(system, notes)
        return
    except Exception as exc:  # never leave what setup started running
        notes.append(f"{system.label} setup failed: {type(exc).__name__}: {str(exc)[:300]}")
        log(f"setup FAILED:\n{traceback.format_exc()}")
        _teardown(system, notes)
        return
    try:
        for rep in range(reps):
            def guarded(scenario: str, fn: Any, rep: int = rep) -> None:
                if scenario not in scenarios:
                    return
                try:
                    t0 = time.perf_counter()
                    fn()
                    log(f"rep {rep + 1}/{reps} {scenario} done in {time.perf_counter() - t0:.1f} s")
                except Exception as exc:
                    notes.append(f"{system.label} {scenario} rep {rep + 1} failed: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}")
                    log(f"{scenario} FAILED:\n{traceback.format_exc()}")

            def throughput() -> None:
                enq, drn = system.throughput(opts.n)
                rows["enqueue"].series(name).add(enq)
                rows["drain"].series(name).add(drn)

            def latency() -> None:
                start, result = system.latency(opts.latency_n)
                for pct in PCTS:
                    key = "max" if pct == 100 else f"p{pct}"
                    rows[f"start_{key}"].series(name).add(percentile(start, pct))
                    rows[f"result_{key}"].series(name).add(percentile(result, pct))

            def cold() -> None:
                rows["cold"].series(name).add(system.cold_start())

            def warm() -> None:
                if not hasattr(system, "warm_vs_cold"):
                    return
                warm_t, cold_t = system.warm_vs_cold(opts.warm_runs, opts.cold_runs)
                w, c = percentile(warm_t, 50), percentile(cold_t, 50)
                rows["warm_ms"].series(name).add(w)
                rows["cold_ms"].series(name).add(c)
                rows["warm_ratio"].series(name).add(c / w)

            def memory() -> None:
                mem = system.memory()
                for key, part in (("ex", "executor"), ("sup", "supervisor"), ("zyg", "zygote")):
                    for kind in ("uss", "pss"):
                        values = [m[kind] for m in mem.get(part, [])]
                        row = rows.get(f"{key}_{kind}")
                        if values and row is not None:
                            row.series(name).add(sorted(values)[len(values) // 2])

            guarded("throughput", throughput)
            guarded("latency", latency)
            guarded("cold", cold)
            guarded("warm", warm)
            guarded("memory", memory)
    finally:
        log("tearing down")
        _teardown(system, notes)


def _teardown(system: Any, notes: list[str]) -> None:
    try:
        system.teardown()
    except Exception as exc:
        notes.append(f"{system.label} teardown failed: {type(exc).__name__}: {str(exc)[:300]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=5000, help="runs per throughput repetition")
    parser.add_argument("--latency-n", type=int, default=300, help="sequential triggers")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every scenario")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS),
                        help=f"comma-separated subset of {','.join(ALL_SYSTEMS)}")
    parser.add_argument("--scenarios", default=",".join(ALL_SCENARIOS),
                        help=f"comma-separated subset of {','.join(ALL_SCENARIOS)}")
    parser.add_argument("--concurrency", type=int, default=10,
                        help="our worker's --concurrency (executors)")
    parser.add_argument("--procrastinate-concurrency", type=int, default=8,
                        help="async jobs per Procrastinate worker process (2 processes)")
    parser.add_argument("--warm-runs", type=int, default=200)
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--pg", default=os.environ.get("BENCH_PG_URL", DEFAULT_PG),
                        help="Postgres server URL (a fresh database is created per run)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS))
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 when a system is skipped or a scenario fails")
    args = parser.parse_args(argv)

    systems = [s for s in args.systems.split(",") if s]
    scenarios = [s for s in args.scenarios.split(",") if s]
    bad = [s for s in systems if s not in ALL_SYSTEMS] + [s for s in scenarios
                                                         if s not in ALL_SCENARIOS]
    if bad:
        parser.error(f"unknown system or scenario: {bad}")
    log_dir = Path(tempfile.mkdtemp(prefix="trigger-bench-"))
    opts = Options(n=args.n, latency_n=args.latency_n, pg_url=args.pg, redis_url=args.redis,
                   log_dir=log_dir, ours_concurrency=args.concurrency,
                   procrastinate_concurrency=args.procrastinate_concurrency,
                   warm_runs=args.warm_runs, cold_runs=args.cold_runs)
    before = machine_info()
    rows = build_rows(args.concurrency)
    notes: list[str] = [f"process logs: {log_dir}"]
    for name in systems:
        run_system(name, opts, scenarios, args.reps, rows, notes)
    after = machine_info()
    header = {"when": datetime.now().strftime("%Y-%m-%d %H:%M"), "nproc": before["nproc"],
              "load_before": " ".join(f"{x:.2f}" for x in before["load"]),
              "load_after": " ".join(f"{x:.2f}" for x in after["load"]),
              "python": before["python"], "n": args.n, "latency_n": args.latency_n,
              "reps": args.reps, "notes": notes}
    shown = [r for r in rows.values() if r.values]
    table = render(shown, systems, header)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    failed = any("skipped" in n or "failed" in n for n in notes)
    return 1 if (args.strict and failed) else 0
