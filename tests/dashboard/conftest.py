"""Browser tests of the dashboard: Debian's Chromium driven by Playwright, against a real API,
a real worker process and Postgres. Screenshots go to the test's artifacts folder
(``TRIGGER_ARTIFACTS``, default the pytest temp dir); with ``TRIGGER_SCREENSHOTS_DIR`` set, the
README's ones are copied there too (``TRIGGER_SCREENSHOTS_DIR=docs/screenshots``)."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.conftest import ApiServer
from tests.e2e.conftest import Project, WorkerProcess, make_project, start_worker
from worker.api.dashboard.access import create_user

CHROMIUM = "/usr/bin/chromium"
USER, PASSWORD = "alice", "correct horse battery"
TASKS = """
import asyncio
from pydantic import BaseModel
from worker import schedules, schema_task, task, wait


class Greeting(BaseModel):
    name: str = "world"
    times: int = 1


@schema_task(id="greet", schema=Greeting)
async def greet(payload, ctx):
    await asyncio.sleep(0.5)
    return {"hello": payload.name, "times": payload.times}


@task(id="explode", retry={"max_attempts": 2, "min_timeout_ms": 100, "randomize": False})
async def explode(payload, ctx):
    raise ValueError("the flux capacitor broke")


@task(id="approve")
async def approve(payload, ctx):
    token = await wait.create_token(timeout="1h", tags=["approval"])
    result = await wait.for_token(token)
    return {"approved": result.unwrap()}


@task(id="linger")
async def linger(payload, ctx):
    await asyncio.sleep(60)
    return "done"


@task(id="quick", queue={"name": "lane"})
async def quick(payload, ctx):
    return payload


@schedules.task(id="nightly")
async def nightly(payload, ctx):
    return payload.timestamp.isoformat()
"""

@dataclass
class Dash:
    project: Project
    worker: WorkerProcess
    artifacts: Path

    @property
    def api(self) -> ApiServer:
        return self.project.api

    def url(self, path: str = "", env: str = "dev") -> str:
        return f"{self.api.url}/dashboard/{self.project.ref}/{env}/{path}".rstrip("/")


@pytest.fixture(scope="module")
def dash(api_server: ApiServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dash]:
    root = tmp_path_factory.mktemp("dash")
    project = make_project(root, api_server, {"tasks.py": TASKS})
    create_user(api_server.database_url, USER, PASSWORD)
    # token waits checkpoint after 0.5 s (not 10): the token test sees WAITING sooner
    worker = start_worker(project, "dash", concurrency=4, TRIGGER_CHECKPOINT_AFTER="0.5")
    artifacts = Path(os.environ.get("TRIGGER_ARTIFACTS", root / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    yield Dash(project, worker, artifacts)
    worker.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():  # .ci/run installs it
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def login(page: Page, dash: Dash) -> None:
    page.goto(f"{dash.api.url}/dashboard/login")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/dashboard/.+/runs"))


@pytest.fixture
def page(browser: Browser, dash: Dash, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A logged-in page; a screenshot of its last state is kept as an artifact."""
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    # actions and assertions wait for what they expect up to 20 s (assertions: 5 s by
    # default): on a loaded machine a page, a live refresh or a run can take seconds
    context.set_default_timeout(20_000)
    expect.set_options(timeout=20_000)
    page = context.new_page()
    login(page, dash)
    yield page
    shot(page, dash, request.node.name)
    context.close()


def shot(page: Page, dash: Dash, name: str, publish: bool = False) -> Path:
    """A screenshot artifact; ``publish``: also one for the README (TRIGGER_SCREENSHOTS_DIR)."""
    path = dash.artifacts / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    if publish and (target := os.environ.get("TRIGGER_SCREENSHOTS_DIR")):
        shutil.copy(path, Path(target) / path.name)
    return path
