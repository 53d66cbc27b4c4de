"""The web dashboard (docs/dashboard.md): server-rendered pages under ``/dashboard``, live over
server-sent events, behind a login; mounted on the API app by :func:`mount`."""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from worker.api.dashboard import routes_auth, routes_pages, routes_runs, routes_settings
from worker.api.dashboard.web import (
    PREFIX,
    CsrfRefused,
    LoginRequired,
    SecurityHeaders,
    render,
)
from worker.api.errors import status_of
from worker.engine.errors import EngineError


def mount(app: FastAPI) -> None:
    app.add_middleware(SecurityHeaders)

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, _: LoginRequired) -> Response:
        if request.method == "GET" and request.headers.get("accept", "") != "text/event-stream":
            return RedirectResponse(f"{PREFIX}/login", status_code=303)
        return Response("log in first", status_code=401, media_type="text/plain")

    @app.exception_handler(CsrfRefused)
    async def csrf_refused(_: Request, __: CsrfRefused) -> Response:
        return Response(
            "refused: this form lacks a valid CSRF token (reload the page and try again)",
            status_code=403,
            media_type="text/plain",
        )

    json_engine_error = app.exception_handlers[EngineError]

    @app.exception_handler(EngineError)
    async def engine_error(request: Request, exc: EngineError) -> Response:
        """On a dashboard page an engine error is a page saying what went wrong."""
        if not request.url.path.startswith(PREFIX + "/"):
            answer = json_engine_error(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        return render("problem.html", None, status_code=status_of(exc), error=exc.message)

    for module in (routes_auth, routes_runs, routes_pages, routes_settings):
        app.include_router(module.router)
