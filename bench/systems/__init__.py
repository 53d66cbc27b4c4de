"""One module per system under test; each exposes a class with the same scenario methods.

A scenario method returns plain numbers (seconds, per-second rates, lists of milliseconds);
the CLI repeats them and builds the table. Every method bounds its loops in time and count and
stops every process it started before returning (also on errors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Options:
    n: int
    latency_n: int
    pg_url: str
    redis_url: str
    log_dir: Path
    ours_concurrency: int = 2
    procrastinate_concurrency: int = 8
    warm_runs: int = 200
    cold_runs: int = 10
