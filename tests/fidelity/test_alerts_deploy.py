"""Alerts (email over SMTP, Slack webhook, signed webhook) and ``trigger deploy`` / ``login`` /
``whoami``, against an API process of their own (its own database, so no other API's alerter
takes the deliveries), a local SMTP sink and a local HTTP receiver.
"""

from __future__ import annotations

import email
import hashlib
import hmac
import http.server
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import ROOT, ApiServer, start_api, stop_process
from tests.e2e.conftest import make_project, start_worker, wait_final, wait_for
from worker import alerts, configure, tasks
from worker.engine.keys import create_project
from worker.engine.migrate import migrate
from worker.sdk import client
from worker.sdk.errors import ApiError


class SmtpSink(socketserver.ThreadingTCPServer):
    """Just enough SMTP for smtplib.send_message: keeps every message it is given."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []
        super().__init__(("127.0.0.1", 0), _SmtpHandler)


class _SmtpHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        sink: SmtpSink = self.server  # type: ignore[assignment]
        self.wfile.write(b"220 sink\r\n")
        while line := self.rfile.readline():
            verb = line.strip().split(b" ")[0].upper()
            if verb == b"DATA":
                self.wfile.write(b"354 go\r\n")
                data = b""
                while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                    data += chunk
                sink.messages.append(email.message_from_bytes(data))
                self.wfile.write(b"250 queued\r\n")
            elif verb == b"QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                self.wfile.write(b"250 ok\r\n")


class Receiver(http.server.ThreadingHTTPServer):
    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], bytes]] = []
        super().__init__(("127.0.0.1", 0), _ReceiverHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _ReceiverHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        server: Receiver = self.server  # type: ignore[assignment]
        server.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def sinks() -> Iterator[tuple[SmtpSink, Receiver]]:
    smtp, receiver = SmtpSink(), Receiver()
    for server in (smtp, receiver):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield smtp, receiver
    for server in (smtp, receiver):
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def private_api(database_url: str, sinks: tuple[SmtpSink, Receiver],
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    info = psycopg.conninfo.conninfo_to_dict(database_url)
    dbname = f"trigger_alerts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    info["dbname"] = dbname
    url = psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]
    migrate(url)
    smtp, _ = sinks
    server = start_api(url, tmp_path_factory.mktemp("alerts-api") / "api.log",
                       TRIGGER_SMTP_HOST="127.0.0.1", TRIGGER_SMTP_PORT=str(smtp.server_address[1]),
                       TRIGGER_SMTP_FROM="alerts@example.com", TRIGGER_ALERTS_INTERVAL="0.2",
                       TRIGGER_ALERTS_LAG="0.3")
    yield server
    stop_process(server.process)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


@pytest.fixture
def sdk(private_api: ApiServer) -> Iterator[dict[str, str]]:
    keys = create_project(private_api.database_url, f"a-{uuid.uuid4().hex[:8]}")
    saved = dict(client._settings)
    configure(api_url=private_api.url, secret_key=keys["dev"])
    yield keys
    client._settings.update(saved)
    client._clients.clear()


FAILING = """
from worker import task

@task(id="explode", retry={"max_attempts": 1})
def explode(payload):
    raise RuntimeError("kaboom " + payload["why"])
"""


async def test_failed_run_alerts_by_email_slack_and_webhook(
    private_api: ApiServer, sinks: tuple[SmtpSink, Receiver], tmp_path: Path
) -> None:
    smtp, receiver = sinks
    project = make_project(tmp_path, private_api, {"tasks.py": FAILING})
    configure(api_url=private_api.url, secret_key=project.key)
    try:
        with pytest.raises(ApiError) as caught:
            await alerts.create(name="bad", type="EMAIL", to=["not-an-address"])
        assert caught.value.status == 400 and "EMAIL channel needs" in str(caught.value)
        await alerts.create(name="ops", type="EMAIL", to=["ops@example.com"])
        await alerts.create(name="slack", type="SLACK", url=receiver.url + "/slack")
        hook = await alerts.create(name="hook", type="WEBHOOK", url=receiver.url + "/hook",
                                   secret="s3cret",
                                   alert_types=["TASK_RUN_FAILED", "DEPLOYMENT_SUCCESS"])
        listed = {c.name: c for c in await alerts.list()}
        assert set(listed) == {"ops", "slack", "hook"}
        assert listed["hook"].properties == {"url": receiver.url + "/hook", "secret": "[set]"}

        worker = start_worker(project)
        try:
            run_id = (await tasks.trigger("explode", {"why": "now"})).id
            with project.client() as http:
                assert wait_final(http, run_id)["status"] == "FAILED"
            wait_for(lambda: len(smtp.messages) >= 1 and len(receiver.posts) >= 2, 30,
                     "the alerts")
        finally:
            worker.stop()
        mail = smtp.messages[0]
        assert mail["To"] == "ops@example.com" and mail["From"] == "alerts@example.com"
        assert run_id in mail["Subject"] and "explode FAILED" in mail["Subject"]
        assert "kaboom now" in mail.get_payload()
        by_path = {path: (headers, body) for path, headers, body in receiver.posts}
        assert "kaboom now" in json.loads(by_path["/slack"][1])["text"]
        headers, body = by_path["/hook"]
        expected = hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["x-trigger-signature"] == f"sha256={expected}"
        sent = json.loads(body)
        assert sent["type"] == "TASK_RUN_FAILED" and sent["runId"] == run_id
        assert sent["taskIdentifier"] == "explode" and sent["project"] == project.ref
        with psycopg.connect(private_api.database_url) as conn:
            rows = conn.execute(
                "SELECT count(*), count(sent_at) FROM alert_deliveries WHERE subject_id = %s",
                (run_id,)).fetchone()
        assert rows == (3, 3)  # one delivery per channel, each sent once
        await alerts.delete(hook.id)
        assert {c.name for c in await alerts.list()} == {"ops", "slack"}
    finally:
        client._clients.clear()


DEPLOYED = """
from pydantic import BaseModel
from worker import schema_task

class Order(BaseModel):
    sku: str
    quantity: int

@schema_task(id="place-order", schema=Order)
def place_order(payload):
    return payload.quantity
"""

CONFIG = """
from worker import define_config

config = define_config(project="{ref}", dirs=["trigger"], max_duration=60,
                       build={{"system_packages": ["ffmpeg"],
                               "pip_packages": ["httpx>=0.27"],
                               "files": ["data"]}})
"""


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worker", *args], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                          timeout=120)


def test_login_whoami_and_deploy(private_api: ApiServer, sinks: tuple[SmtpSink, Receiver],
                                 tmp_path: Path) -> None:
    _, receiver = sinks
    project = make_project(tmp_path / "proj", private_api, {"tasks.py": DEPLOYED})
    (project.dir / "trigger_config.py").write_text(CONFIG.format(ref=project.ref))
    (project.dir / "data").mkdir()
    (project.dir / "data" / "prices.csv").write_text("sku,price\n")
    env = {"TRIGGER_CONFIG_DIR": str(tmp_path / "cfg"), "TRIGGER_SECRET_KEY": "",
           "TRIGGER_API_URL": ""}
    http = project.client()
    http.post("/api/v1/alerts", json={"name": "deploys", "type": "WEBHOOK",
                                      "properties": {"url": receiver.url + "/deploys"},
                                      "alertTypes": ["DEPLOYMENT_SUCCESS"]}).raise_for_status()

    missing = _cli("whoami", "--profile", "staging", env=env)
    assert missing.returncode != 0 and "trigger login" in missing.stderr
    bad = _cli("login", "--api-url", private_api.url, "--key", "tr_dev_wrong", "--profile",
               "staging", env=env)
    assert bad.returncode != 0 and "401" in bad.stderr
    login = _cli("login", "--api-url", private_api.url, "--key", project.key, "--profile",
                 "staging", env=env)
    assert login.returncode == 0, login.stderr
    assert project.key not in login.stdout
    profiles = tmp_path / "cfg" / "profiles.json"
    assert profiles.stat().st_mode & 0o077 == 0  # the key file is the user's alone
    who = _cli("whoami", "--profile", "staging", env=env)
    assert who.returncode == 0 and f"project {project.ref}, environment dev" in who.stdout

    no_engine = _cli("deploy", "--project-dir", str(project.dir), "--profile", "staging",
                     "--build", env={**env, "PATH": "/nonexistent"})
    assert no_engine.returncode != 0 and "no container engine" in no_engine.stderr

    staged = _cli("deploy", "--project-dir", str(project.dir), "--profile", "staging",
                  "--skip-promotion", env=env)
    assert staged.returncode == 0, staged.stderr
    dockerfile = (project.dir / ".trigger" / "Dockerfile").read_text()
    assert "apt-get install -y --no-install-recommends ffmpeg" in dockerfile
    assert "RUN pip install trigger-worker 'httpx>=0.27'" in dockerfile
    for line in ("COPY trigger_config.py ./trigger_config.py", "COPY trigger ./trigger",
                 "COPY data ./data", 'CMD ["trigger", "worker"]', "USER trigger"):
        assert line in dockerfile
    # registered, not promoted: no current definition, so the task is unknown at trigger time
    reply = http.post("/api/v1/tasks/place-order/trigger", json={"payload": {"sku": "a"}})
    assert reply.status_code == 404, reply.text

    deployed = _cli("deploy", "--project-dir", str(project.dir), "--profile", "staging",
                    env=env)
    assert deployed.returncode == 0, deployed.stderr
    assert "Promoted: version" in deployed.stdout and "DEPLOYED" in deployed.stdout
    deployment_id = deployed.stdout.split(" as ")[1].split(" ")[0]
    assert http.get(f"/api/v1/deployments/{deployment_id}").json()["status"] == "DEPLOYED"
    # promoted: the deployed schema is checked at trigger time, before any worker connects
    reply = http.post("/api/v1/tasks/place-order/trigger", json={"payload": {"sku": "a"}})
    assert reply.status_code == 422 and "quantity" in reply.text
    ok = http.post("/api/v1/tasks/place-order/trigger",
                   json={"payload": {"sku": "a", "quantity": 2}})
    assert ok.status_code == 200, ok.text
    deadline = time.monotonic() + 30
    while not any(p == "/deploys" for p, _, _ in receiver.posts):
        assert time.monotonic() < deadline, "no deploy alert"
        time.sleep(0.05)
    body: dict[str, Any] = next(json.loads(b) for p, _, b in receiver.posts if p == "/deploys")
    assert body["type"] == "DEPLOYMENT_SUCCESS" and body["deploymentId"] == deployment_id
    assert body["tasks"] == ["place-order"]
