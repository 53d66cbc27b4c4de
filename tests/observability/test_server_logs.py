"""`trigger api --log-format json`: one JSON object per line with time, level, logger and the
request id (the one returned in x-request-id); secrets never reach the log."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import ROOT, free_port, stop_process
from worker.api.observability import JsonFormatter, scrub


def test_json_server_logs_carry_request_ids(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    log_path = tmp_path / "api.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "api", "--host", "127.0.0.1", "--port", str(port),
         "--log-format", "json"],
        env={**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)},
        stdout=log_path.open("ab"), stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
        secret = "tr_dev_" + "s3cr3t" * 5
        reply = httpx.get(f"{url}/api/v1/runs/run_x/trace", headers={
            "Authorization": f"Bearer {secret}", "x-request-id": "req-42"})
        assert reply.status_code == 401 and reply.headers["x-request-id"] == "req-42"
        minted = httpx.get(f"{url}/healthz").headers["x-request-id"]
        assert len(minted) == 16
        deadline = time.monotonic() + 10
        while "req-42" not in log_path.read_text():
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    finally:
        stop_process(process)
    text = log_path.read_text()
    assert "s3cr3t" not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines and all({"time", "level", "logger", "request_id", "message"} <= set(line)
                         for line in lines)
    access = next(line for line in lines if line["request_id"] == "req-42")
    assert access["level"] == "info" and "/api/v1/runs/run_x/trace" in access["message"]


def test_secrets_are_scrubbed_from_any_message() -> None:
    record = logging.LogRecord(
        "worker.api", logging.WARNING, __file__, 1,
        "key %s dsn %s auth %s cb %s", ("tr_prod_abcdefgh123", "postgresql://u:pw@h/db",
                                        "Bearer tok.en", "/callback/sig123?x=1"), None)
    entry = json.loads(JsonFormatter().format(record))
    message = entry["message"]
    for leaked in ("abcdefgh123", ":pw@", "tok.en", "sig123"):
        assert leaked not in message, message
    assert "tr_prod_[REDACTED]" in message and "postgresql://u:[REDACTED]@h/db" in message
    assert scrub("plain text") == "plain text"
