"""``python -m bench.executor_cpu``: an executor's CPU per no-op run, alone (no API, no Postgres).

Runs the executor's own loop (``serve_frames``: decode the ``execute`` frame, run the attempt
with its span, hooks and capture, encode and write the completion frame) over N frames in this
process, with telemetry
set up as in a real executor and its spans exported over OTLP/HTTP to a stub collector in
another process, and reports the process's CPU time (every thread: the span export thread
included) per run. Load-robust, so two versions of the code compare fairly on a busy box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

_STUB = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"""


class _Channel:
    """The supervisor's end of the socket, as far as the executor sees it: each frame is
    encoded and written to a socket (and read back, so it never fills)."""

    def __init__(self) -> None:
        self.a, self.b = socket.socketpair()

    def send(self, message: dict[str, object]) -> None:
        from worker.runtime.framing import encode

        self.a.sendall(encode(message))
        self.b.recv(1 << 16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--no-telemetry", action="store_true")
    args = parser.parse_args()

    stub = subprocess.Popen([sys.executable, "-c", _STUB], stdout=subprocess.PIPE, text=True)
    assert stub.stdout is not None
    port = int(stub.stdout.readline())
    try:
        _measure(args, f"http://127.0.0.1:{port}")
    finally:
        stub.kill()


def _measure(args: argparse.Namespace, api_url: str) -> None:
    import orjson
    import uvloop

    from worker.runtime import telemetry
    from worker.runtime.discovery import discover
    from worker.runtime.executor import serve_frames
    from worker.runtime.framing import encode
    from worker.testing import _run

    if args.no_telemetry:
        os.environ["TRIGGER_TELEMETRY"] = "0"
    project = Path(os.environ.get("BENCH_PROJECT") or Path(__file__).resolve().parent / "project")
    discovered = discover(project)
    # as in a real executor: the zygote froze what its imports made (worker/runtime/zygote.py),
    # so a full collection does not walk the runtime's own objects
    import gc

    gc.freeze()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    telemetry.setup(discovered.config, api_url, "tr_dev_stub")
    task = discovered.tasks["noop"]
    channel = _Channel()

    def frame(i: int) -> bytes:
        run = _run(task, i, discovered.config, run_id=f"run_{uuid.uuid4().hex[:20]}", attempt=1,
                   max_attempts=1, machine=None, max_duration=60, tags=[],
                   environment="dev")
        wire = run.to_wire()
        wire["traceparent"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
        return encode({"type": "execute", "run": wire})

    def serve(frames: list[bytes]) -> None:
        it = iter(frames)

        def receive() -> dict[str, object] | None:
            f = next(it, None)
            return None if f is None else orjson.loads(f[4:])  # what recv_sync hands back

        loop.run_until_complete(serve_frames(receive, discovered, channel))

    serve([frame(i) for i in range(200)])  # warm up
    telemetry.flush()
    print(f"N = {args.n}, telemetry {'off' if args.no_telemetry else 'on'}, "
          f"load average {os.getloadavg()}")
    for rep in range(args.reps):
        frames = [frame(i) for i in range(args.n)]
        cpu0, wall0 = time.process_time(), time.perf_counter()
        serve(frames)
        telemetry.flush()  # the export of this rep's spans counts too
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        print(f"rep {rep + 1}: CPU per run {cpu / args.n * 1e6:7.1f} µs, "
              f"wall per run {wall / args.n * 1e6:7.1f} µs")
    telemetry.shutdown()


if __name__ == "__main__":
    main()
