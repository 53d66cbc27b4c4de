"""Dashboard access without a browser: the one-time `trigger dev` link, `trigger users create`,
the admin password from the environment, logout, and the JSON API keeping bearer auth."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ROOT, ApiServer, start_api, stop_process
from worker.api.dashboard.access import create_login_link


class Browserish(httpx.Client):
    """A cookie-keeping client that, like Chromium on a loopback address, sends the dashboard's
    Secure cookies over plain http (httpx alone would not)."""

    def request(self, *args: Any, **kwargs: Any) -> httpx.Response:
        response = super().request(*args, **kwargs)
        for cookie in self.cookies.jar:
            cookie.secure = False
        return response


def _csrf(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


def test_dev_login_link_works_once(api_server: ApiServer) -> None:
    link = create_login_link(api_server.database_url, api_server.url)
    with Browserish() as browser:
        first = browser.get(link)
        assert first.status_code == 303 and first.headers["location"] == "/dashboard/"
        assert "trigger_session" in browser.cookies
        landing = browser.get(f"{api_server.url}/dashboard/")
        assert landing.status_code == 303 and "/runs" in landing.headers["location"]
    with Browserish() as other:
        again = other.get(link)
        assert again.status_code == 401 and "used or expired" in again.text
        assert "trigger_session" not in other.cookies


def test_users_create_cli_then_login_and_logout(api_server: ApiServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "worker", "users", "create", "bob", "--password-stdin"],
        input="a long enough secret\n", capture_output=True, text=True, cwd=ROOT,
        env={"DATABASE_URL": api_server.database_url, "PATH": "/usr/bin:/bin",
             "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    base = f"{api_server.url}/dashboard"
    with Browserish() as browser:
        form = browser.get(f"{base}/login")
        wrong = browser.post(f"{base}/login", data={
            "username": "bob", "password": "not it at all", "csrf": _csrf(form)})
        assert wrong.status_code == 401 and "trigger_session" not in browser.cookies
        form = browser.get(f"{base}/login")
        # a login form posted without its double-submit token (login CSRF) is refused
        forged = httpx.post(f"{base}/login", data={
            "username": "bob", "password": "a long enough secret", "csrf": _csrf(form)})
        assert forged.status_code == 403
        ok = browser.post(f"{base}/login", data={
            "username": "bob", "password": "a long enough secret", "csrf": _csrf(form)})
        assert ok.status_code == 303 and "trigger_session" in browser.cookies
        landing = browser.get(f"{base}/", follow_redirects=True)
        assert landing.status_code == 200 and "Log out" in landing.text
        out = browser.post(f"{base}/logout", data={"csrf": _csrf(landing)})
        assert out.status_code == 303
        after = browser.get(f"{base}/")
        assert after.status_code == 303 and after.headers["location"] == "/dashboard/login"
    # the JSON API still wants its bearer key, whatever cookie comes with it
    assert httpx.get(f"{api_server.url}/api/v1/runs").status_code == 401


def test_admin_password_from_the_environment(database_url: str, tmp_path: Path) -> None:
    api = start_api(database_url, tmp_path / "api.log",
                    TRIGGER_DASHBOARD_PASSWORD="admin-secret-42",
                    TRIGGER_AUTH_FAILURES_PER_MINUTE="3")
    try:
        base = f"{api.url}/dashboard"
        with Browserish() as browser:
            form = browser.get(f"{base}/login")
            ok = browser.post(f"{base}/login", data={
                "username": "admin", "password": "admin-secret-42", "csrf": _csrf(form)})
            assert ok.status_code == 303 and "trigger_session" in browser.cookies
        with Browserish() as browser:
            form = browser.get(f"{base}/login")
            for _ in range(3):
                form = browser.post(f"{base}/login", data={
                    "username": "admin", "password": "admin-secret-43", "csrf": _csrf(form)})
                assert form.status_code == 401
            # guessing is throttled per address: now even the right password waits
            held = browser.post(f"{base}/login", data={
                "username": "admin", "password": "admin-secret-42", "csrf": _csrf(form)})
            assert held.status_code == 429 and "too many failed" in held.text
    finally:
        stop_process(api.process)
