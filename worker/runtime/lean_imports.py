"""Keep httpx's command-line module out of the worker's processes.

``import httpx`` also imports ``httpx._main`` (its CLI: click, rich, pygments) whenever click is
installed, which it always is beside uvicorn: ~105 modules, ~5 MiB of the supervisor's memory
and ~0.1 s of each interpreter's start (docs/benchmarks.md, "Memory"). The worker never runs
that CLI, so its entry points (``python -m worker``, the zygote) register an empty stand-in
before anything imports httpx. Never called from library code: a user's process keeps httpx
as it is.
"""

from __future__ import annotations

import sys
import types


def skip_httpx_cli() -> None:
    if "httpx" in sys.modules or "httpx._main" in sys.modules:
        return  # too late, or done

    def main() -> None:
        raise SystemExit("httpx's command line is not loaded in trigger-worker processes")

    stand_in = types.ModuleType("httpx._main")
    stand_in.main = main  # type: ignore[attr-defined]
    sys.modules["httpx._main"] = stand_in
