"""The watchdog of ``trigger dev``: stops the embedded Postgres when ``trigger dev`` dies.

``python -P -m worker.devwatch --pgdata DIR`` is started by ``trigger dev`` in a session of
its own (so the terminal's Ctrl-C and hang-up do not reach it), with a pipe as its stdin. It
blocks reading that pipe. The pipe closes however ``trigger dev`` ends — a clean exit, an
uncaught signal, ``kill -9``, the OOM killer — and the watchdog then stops the Postgres server
(a daemon that nothing else would stop) and the API process group (``api PID`` lines on the
pipe) unless ``trigger dev`` said ``done`` first. On Linux the API and the worker's zygote also
die with their parent on their own (``PR_SET_PDEATHSIG``); this covers macOS too.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker.devwatch")
    parser.add_argument("--pgdata", default=None, help="the embedded server's data folder")
    args = parser.parse_args(argv)
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    told = b""
    while True:
        try:
            chunk = os.read(0, 1024)
        except InterruptedError:
            continue
        if not chunk:
            break
        told += chunk
    lines = told.decode(errors="replace").split()
    if "done" in lines:
        return 0
    for word, value in itertools.pairwise(lines):
        if word == "api" and value.isdigit():
            with contextlib.suppress(OSError):
                os.killpg(int(value), signal.SIGTERM)  # the API leads its own group
    if args.pgdata:
        from worker.embedded_pg import stop_pgdata

        stop_pgdata(Path(args.pgdata))
    return 0


if __name__ == "__main__":
    sys.exit(main())
