"""``python -m bench.ab``: trigger → result latency of two variants, measured side by side.

On a shared two-core machine the speed of one run of the latency scenario drifts by ±15 %
from one minute to the next, more than most changes are worth. Here both variants are up at
once (each its own API, worker and database) and take turns, a block of sequential triggers
each (through the SDK, as the latency scenario); the drift hits both alike. A variant is a
checkout (``--code-a``/``--code-b``: the API and worker run from its ``worker`` package) and
environment variables for its processes (``--env-a K=V,K=V``).

Reported per variant: start and result p50/p90/p99, and per run the machine's CPU time and
context switches (``/proc/stat``: every process, the kernel's share included). Then the
result p50 of B minus A, block against block: its median and quartiles.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench import common
from bench.common import DEFAULT_PG, Proc
from bench.systems import Options
from bench.systems.ours import Ours


@dataclass
class Variant:
    name: str
    code: Path
    env: dict[str, str]
    system: Ours | None = None
    worker: Proc | None = None
    starts: list[float] = field(default_factory=list)
    results: list[float] = field(default_factory=list)
    block_p50s: list[float] = field(default_factory=list)
    cpu_ticks: int = 0
    switches: int = 0


def _machine() -> tuple[int, int]:
    """(busy clock ticks of all CPUs, context switches) so far."""
    busy = switches = 0
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("cpu "):
                ticks = [int(v) for v in line.split()[1:]]
                busy = sum(ticks) - ticks[3] - ticks[4]  # all but idle and iowait
            elif line.startswith("ctxt "):
                switches = int(line.split()[1])
    return busy, switches


def _pairs(text: str) -> dict[str, str]:
    """``K=V,K=V`` (argparse's type for --env-a/--env-b)."""
    pairs = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{item!r} is not NAME=VALUE (e.g. TRIGGER_X=1)")
        pairs[key] = value
    return pairs


def _start(variant: Variant, pg_url: str) -> None:
    saved_root, saved_env = common.ROOT, {k: os.environ.get(k) for k in variant.env}
    common.ROOT = variant.code  # spawn() runs the API and the worker from this checkout
    os.environ.update(variant.env)
    try:
        system = Ours(Options(n=100, latency_n=1, pg_url=pg_url, redis_url="",
                              log_dir=Path(tempfile.mkdtemp(prefix=f"ab-{variant.name}-")),
                              ours_concurrency=10))
        variant.system = system
        system.setup()
        variant.worker = system.start_worker()
    finally:
        common.ROOT = saved_root
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


async def _blocks(variants: list[Variant], blocks: int, per_block: int) -> None:
    from worker.sdk import transport

    try:
        for block in range(blocks):
            for variant in variants if block % 2 == 0 else variants[::-1]:
                system = variant.system
                assert system is not None
                transport.default.configure(api_url=system.api_url, secret_key=system.key)
                for i in range(5):  # the connection and the API warm again
                    await system._one_latency(i)
                ticks, switches = _machine()
                results = []
                for i in range(per_block):
                    start, result = await system._one_latency(i)
                    variant.starts.append(start)
                    variant.results.append(result)
                    results.append(result)
                ticks_after, switches_after = _machine()
                variant.cpu_ticks += ticks_after - ticks
                variant.switches += switches_after - switches
                variant.block_p50s.append(statistics.median(results))
    finally:
        await transport.default.aclose()


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def report(variants: list[Variant]) -> str:
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    lines = ["| variant | start p50 | start p90 | result p50 | result p90 | result p99 | "
             "CPU per run (ms) | context switches per run |", "|---|" + "---:|" * 7]
    for v in variants:
        n = len(v.results)
        label = ", ".join([str(v.code), *(f"{k}={x}" for k, x in v.env.items())])
        lines.append(
            f"| {v.name} ({label}) | {statistics.median(v.starts):.2f} | {_pct(v.starts, 0.9):.2f} "
            f"| {statistics.median(v.results):.2f} | {_pct(v.results, 0.9):.2f} "
            f"| {_pct(v.results, 0.99):.2f} | {v.cpu_ticks * tick_ms / n:.2f} "
            f"| {v.switches / n:.1f} |")
    a, b = variants
    diffs = sorted(y - x for x, y in zip(a.block_p50s, b.block_p50s, strict=True))
    lines.append("")
    lines.append(f"result p50, B − A, block against block ({len(diffs)} pairs): median "
                 f"{statistics.median(diffs):+.3f} ms, quartiles {_pct(diffs, 0.25):+.3f} / "
                 f"{_pct(diffs, 0.75):+.3f} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab",
                                     description="two variants' latency, side by side")
    here = Path(__file__).resolve().parent.parent
    parser.add_argument("--code-a", type=Path, default=here, help="checkout A (default: this)")
    parser.add_argument("--code-b", type=Path, default=here, help="checkout B (default: this)")
    parser.add_argument("--env-a", type=_pairs, default={}, help="K=V,K=V for A's processes")
    parser.add_argument("--env-b", type=_pairs, default={}, help="K=V,K=V for B's processes")
    parser.add_argument("--blocks", type=int, default=30, help="blocks per variant")
    parser.add_argument("--per-block", type=int, default=50, help="triggers per block")
    parser.add_argument("--pg", default=DEFAULT_PG)
    args = parser.parse_args(argv)
    for code in (args.code_a, args.code_b):
        if not (code / "worker" / "api" / "app.py").is_file():
            parser.error(f"{code} is not a checkout of this project (no worker/api/app.py)")
    variants = [Variant("A", args.code_a.resolve(), args.env_a),
                Variant("B", args.code_b.resolve(), args.env_b)]
    try:
        for variant in variants:
            _start(variant, args.pg)
        asyncio.run(_blocks(variants, args.blocks, args.per_block))
    finally:
        for variant in variants:
            if variant.system is not None:
                if variant.worker is not None:
                    variant.system._stop(variant.worker)
                variant.system.teardown()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"nproc {os.cpu_count()}, load after {load}; {args.blocks} blocks of "
          f"{args.per_block} triggers per variant\n")
    print(report(variants))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
