"""The zygote builds the span exporters and the resource once (telemetry.prepare); each
executor, forked from it, makes its provider from them with its own service.instance.id."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = r"""
import json, os
from worker.runtime import telemetry
from worker.runtime.span_export import ApiSpanExporter
from worker.sdk.config import define_config

config = define_config(project="prep", telemetry={"resource": {"team": "core"}})
telemetry.prepare(config, "http://127.0.0.1:9", "tr_dev_k")
resource, exporters = telemetry._state.prepared
assert [type(e) for e in exporters] == [ApiSpanExporter], exporters
read, write = os.pipe()
pids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:  # an executor
        telemetry.setup(config, "http://127.0.0.1:9", "tr_dev_k")
        provider = telemetry._state.tracer_provider
        processors = provider._active_span_processor._span_processors
        same = any(getattr(p, "_exporter", None) is exporters[0]
                   or getattr(getattr(p, "_batch_processor", None), "_exporter", None)
                   is exporters[0] for p in processors)
        attrs = dict(provider.resource.attributes)
        os.write(write, (json.dumps({"attrs": attrs, "same": same}) + "\n").encode())
        os._exit(0)
    pids.append(pid)
for pid in pids:
    os.waitpid(pid, 0)
os.close(write)
children = [json.loads(line) for line in os.fdopen(read).read().splitlines()]
print(json.dumps({"zygote": dict(resource.attributes), "children": children}))
"""


def test_executors_share_the_prepared_exporter_and_get_their_own_instance_id() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    zygote, children = out["zygote"], out["children"]
    assert len(children) == 2 and all(c["same"] for c in children)
    for child in children:
        attrs = child["attrs"]
        assert attrs["service.name"] == "prep" and attrs["team"] == "core"
        if "service.instance.id" in zygote:  # SDKs that make one make one per process
            assert attrs["service.instance.id"] != zygote["service.instance.id"]
    if "service.instance.id" in zygote:
        ids = {c["attrs"]["service.instance.id"] for c in children}
        assert len(ids) == 2


PROXIED = r"""
from worker.runtime import telemetry
from worker.sdk.config import define_config

telemetry.prepare(define_config(project="prep"), "http://api.example:3030", "tr_dev_k")
print(type(telemetry._state.prepared[1][0]).__name__)
"""


def test_behind_a_proxy_spans_go_through_the_standard_exporter_which_follows_it() -> None:
    base = {"PYTHONPATH": str(ROOT), "PATH": ""}
    kinds = {}
    for label, env in {"direct": {}, "proxied": {"HTTP_PROXY": "http://proxy.example:3128"},
                       "bypassed": {"HTTP_PROXY": "http://proxy.example:3128",
                                    "NO_PROXY": "api.example"}}.items():
        done = subprocess.run([sys.executable, "-c", PROXIED], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, env={**base, **env})
        assert done.returncode == 0, done.stderr
        kinds[label] = done.stdout.strip()
    assert kinds == {"direct": "ApiSpanExporter", "proxied": "OTLPSpanExporter",
                     "bypassed": "ApiSpanExporter"}
