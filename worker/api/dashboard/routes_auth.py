"""Login (password or one-time link), logout, the landing redirect and the static files."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response

from worker.api.auth import Throttled
from worker.api.dashboard import access
from worker.api.dashboard.web import (
    HERE,
    LOGIN_CSRF_COOKIE,
    PREFIX,
    SESSION_COOKIE,
    CsrfDep,
    SessionDep,
    render,
)
from worker.api.state import api_state, engine_of
from worker.engine.db import fetch_all
from worker.engine.errors import NotFound
from worker.engine.queries import Q

router = APIRouter(prefix=PREFIX, include_in_schema=False)
STATIC = {"app.css": "text/css", "app.js": "text/javascript"}


def _set_session(response: Response, token: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=access.SESSION_SECONDS,
        path=PREFIX,
        secure=True,
        httponly=True,
        samesite="strict",
    )


def _login_page(error: str | None = None, status: int = 200) -> HTMLResponse:
    """The login form; its CSRF token is a double-submit cookie (there is no session yet)."""
    token = secrets.token_urlsafe(24)
    response = render("login.html", None, status_code=status, csrf=token, error=error)
    response.set_cookie(
        LOGIN_CSRF_COOKIE, token, path=PREFIX, secure=True, httponly=True, samesite="strict"
    )
    return response


@router.get("/login")
async def login_form() -> HTMLResponse:
    return _login_page()


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf: Annotated[str, Form()] = "",
) -> Response:
    if not access.same_token(csrf, request.cookies.get(LOGIN_CSRF_COOKIE) or ""):
        return _login_page("The form expired; please try again.", status=403)
    pool = engine_of(request).pool
    # failed logins count with failed API keys per client address (worker/api/auth.py)
    throttle = api_state(request).auth_throttle
    address = request.client.host if request.client else "unknown"
    try:
        throttle.check(address)
    except Throttled as exc:
        return _login_page(exc.message, status=429)
    if not await access.verify_password(pool, username, password,
                                        api_state(request).settings.dashboard_password):
        throttle.failed(address)
        return _login_page("Wrong username or password.", status=401)
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    _set_session(response, await access.open_session(pool, username))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path=PREFIX)
    return response


@router.get("/login/link")
async def login_link(request: Request, token: str = "") -> Response:
    pool = engine_of(request).pool
    username = await access.spend_login_token(pool, token) if token else None
    if username is None:
        return _login_page("This login link is used or expired; ask for a new one.", 401)
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    _set_session(response, await access.open_session(pool, username))
    return response


@router.post("/logout")
async def logout(request: Request, _: CsrfDep) -> Response:
    await access.close_session(engine_of(request).pool, request.cookies[SESSION_COOKIE])
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.get("/")
@router.get("")
async def landing(request: Request, _: SessionDep) -> Response:
    """The newest project's dev environment (or its first environment)."""
    async with engine_of(request).pool.connection() as conn:
        projects = await fetch_all(conn, Q.dash_projects)
    if not projects:
        return render("empty.html", None)
    first = projects[0]
    slug = "dev" if "dev" in first["slugs"] else first["slugs"][0]
    return RedirectResponse(f"{PREFIX}/{first['ref']}/{slug}/runs", status_code=303)


@router.get("/static/{name}")
async def static(name: str) -> FileResponse:
    """The stylesheet and script: public (the login page uses them), and hold no data."""
    if name not in STATIC:
        raise NotFound(f"no static file {name!r}")
    return FileResponse(HERE / "static" / name, media_type=STATIC[name])
