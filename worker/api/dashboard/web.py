"""The dashboard's plumbing: sessions as a dependency, CSRF checks, page rendering, security
headers, and the environment a page acts in (``/dashboard/{project}/{env}/...``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from jinja2 import Environment as Jinja
from jinja2 import FileSystemLoader, select_autoescape
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from worker.api.dashboard import access
from worker.api.dashboard.access import Session
from worker.api.state import engine_of
from worker.common.statuses import API_STATUS
from worker.engine.db import fetch_one
from worker.engine.errors import NotFound
from worker.engine.keys import Environment
from worker.engine.queries import Q

SESSION_COOKIE = "trigger_session"
LOGIN_CSRF_COOKIE = "trigger_login_csrf"
PREFIX = "/dashboard"
HERE = Path(__file__).parent
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]


class LoginRequired(Exception):
    """No valid session: the handler redirects to the login page."""


class CsrfRefused(Exception):
    """A form or action without the session's CSRF token."""


class SecurityHeaders:
    """Adds the CSP and framing headers to every dashboard response (pure ASGI, so the SSE
    stream passes through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("path", "").startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def current_session(request: Request) -> Session:
    token = request.cookies.get(SESSION_COOKIE)
    session = await access.find_session(engine_of(request).pool, token) if token else None
    if session is None:
        raise LoginRequired()
    return session


SessionDep = Annotated[Session, Depends(current_session)]


async def check_csrf(request: Request, session: SessionDep) -> Session:
    """Every state-changing request carries the session's CSRF token (form field ``csrf``
    or header ``X-CSRF-Token``)."""
    given = request.headers.get("x-csrf-token")
    if given is None:
        form = await request.form()
        value = form.get("csrf")
        given = value if isinstance(value, str) else None
    if not access.same_token(given, session.csrf_token):
        raise CsrfRefused()
    return session


CsrfDep = Annotated[Session, Depends(check_csrf)]


async def environment(request: Request, project: str, env: str) -> Environment:
    async with engine_of(request).pool.connection() as conn:
        row = await fetch_one(conn, Q.dash_environment, {"project": project, "slug": env})
    if row is None:
        raise NotFound(f"no environment {env!r} in project {project!r}")
    return Environment.from_row(row)


EnvDep = Annotated[Environment, Depends(environment)]


@dataclass(frozen=True)
class Page:
    """What every page's layout needs: who, where, and the environments to switch to."""

    session: Session
    env: Environment
    section: str

    @property
    def base(self) -> str:
        return f"{PREFIX}/{self.env.project_ref}/{self.env.slug}"


def _json_pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str, ensure_ascii=False)


def _when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(value: datetime | None) -> str:
    if value is None:
        return "never"
    seconds = int((datetime.now(UTC) - value).total_seconds())
    if seconds < 0:
        return f"in {_span(-seconds)}"
    return f"{_span(seconds)} ago"


def _span(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


templates = Jinja(
    loader=FileSystemLoader(HERE / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
templates.filters["pretty"] = _json_pretty
templates.filters["when"] = _when
templates.filters["ago"] = _ago
templates.filters["api_status"] = lambda s: API_STATUS.get(s, s)
templates.globals["PREFIX"] = PREFIX


def render(
    name: str, page: Page | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    html = templates.get_template(name).render(page=page, **context)
    return HTMLResponse(html, status_code=status_code)


def back_to(url: str, **message: str) -> RedirectResponse:
    """Post/redirect/get, with an optional notice (``notice=``/``error=``) shown once."""
    if message:
        url += ("&" if "?" in url else "?") + urlencode(message)
    return RedirectResponse(url, status_code=303)
