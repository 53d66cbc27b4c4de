"""``python -m bench.executor_hop``: one real executor process, driven as the supervisor does.

Starts ``worker.runtime.executor.serve`` in a child process (telemetry on, its spans exported
to a stub collector), sends it ``execute`` frames of the bench project's ``stamp`` task one at a
time over the unix socket, and reports, per run:

* frame → body starts: from the frame's write to the body's ``time.time()`` stamp;
* body → completion frame: from that stamp to the completion frame read back (the body itself
  returns at once);
* the executor process's CPU time per run (``/proc/<pid>/stat``: every thread of it).

No API, no Postgres, nothing else: the executor's share of ``bench.hops``' "lease txn → body
starts" and "body starts → completion txn", and of ``bench.cpu``'s "zygote+executors".
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import percentile
from bench.executor_cpu import _STUB

_CHILD = """
import sys
from pathlib import Path
import gc
from worker.runtime.discovery import discover
from worker.runtime.executor import serve
discovered = discover(Path(sys.argv[2]))
gc.freeze()
sys.exit(serve(sys.argv[1], discovered))
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()

    from worker.runtime.discovery import discover
    from worker.runtime.framing import encode, recv_sync
    from worker.testing import _run

    project = Path(os.environ.get("BENCH_PROJECT") or Path(__file__).resolve().parent / "project")
    discovered = discover(project)
    task = discovered.tasks["stamp"]
    stub = subprocess.Popen([sys.executable, "-c", _STUB], stdout=subprocess.PIPE, text=True)
    assert stub.stdout is not None
    port = int(stub.stdout.readline())
    path = os.path.join(tempfile.mkdtemp(), "executor.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    env = {**os.environ, "TRIGGER_API_URL": f"http://127.0.0.1:{port}",
           "TRIGGER_SECRET_KEY": "tr_dev_stub"}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, path, str(project)], env=env)
    try:
        conn, _ = server.accept()
        hello = recv_sync(conn)
        assert hello is not None and hello["type"] == "hello", hello

        def frame(i: int) -> bytes:
            run = _run(task, i, discovered.config, run_id=f"run_{uuid.uuid4().hex[:20]}",
                       attempt=1, max_attempts=1, machine=None, max_duration=60, tags=[],
                       environment="dev")
            wire = run.to_wire()
            wire["traceparent"] = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
            return encode({"type": "execute", "run": wire})

        def one(data: bytes) -> tuple[float, float]:
            import orjson

            sent = time.time()
            conn.sendall(data)
            while True:
                reply = recv_sync(conn)
                assert reply is not None
                if reply["type"] == "completion":
                    break
            received = time.time()
            body = orjson.loads(reply["completion"]["output"])["t"]
            return body - sent, received - body

        for i in range(args.warmup):
            one(frame(i))
        frames = [frame(i) for i in range(args.n)]
        cpu0 = _cpu_seconds(child.pid)
        starts, ends = [], []
        for f in frames:
            start, end = one(f)
            starts.append(start * 1000)
            ends.append(end * 1000)
        time.sleep(1.5)  # the span export of these runs (the batch delay is 1 s) counts too
        cpu = _cpu_seconds(child.pid) - cpu0
        print(f"N = {args.n}, load average {os.getloadavg()}")
        print(f"executor CPU per run: {cpu / args.n * 1e6:.1f} µs")
        for name, values in (("frame → body starts", starts), ("body → completion frame", ends)):
            print(f"{name}: p50 {percentile(values, 50):.3f} ms, "
                  f"p90 {percentile(values, 90):.3f} ms, p99 {percentile(values, 99):.3f} ms")
        conn.sendall(encode({"type": "shutdown"}))
        child.wait(10)
    finally:
        child.kill()
        stub.kill()
        server.close()


if __name__ == "__main__":
    main()
