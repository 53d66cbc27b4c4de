"""The FastAPI application: lifespan (migrations, pool, notifier, services) and error mapping."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from worker.api import (
    auth,
    dashboard,
    errors,
    fast_lane,
    guards,
    openapi_doc,
    routes_batches_v2,
    routes_envvars,
    routes_keys,
    routes_metadata,
    routes_metrics,
    routes_public,
    routes_queues,
    routes_realtime,
    routes_schedules,
    routes_sdk,
    routes_tasks,
    routes_traces,
    routes_waitpoints,
    routes_worker,
)
from worker.api.auth import AuthError, FailureThrottle, KeyCache
from worker.api.observability import RequestContextMiddleware, configure_logging
from worker.api.responses import ORJSONResponse, json_response
from worker.api.settings import Settings
from worker.api.state import ApiState, install
from worker.api.stream_caps import StreamCaps
from worker.engine.engine import Engine
from worker.engine.errors import EngineError
from worker.engine.migrate import migrate

log = logging.getLogger(__name__)


class TriggerAPI(FastAPI):
    """FastAPI with the hot routes in a fast lane, and a cheaper test of FastAPI's own
    OpenTelemetry instrumentation per request (worker/api/fast_lane.py)."""

    def build_middleware_stack(self) -> ASGIApp:
        return fast_lane.install(self, super().build_middleware_stack())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        idle = self.__dict__.get("_telemetry_idle", _UNKNOWN)
        if idle is _UNKNOWN:
            idle = self.__dict__["_telemetry_idle"] = fast_lane.telemetry_idle(self)
        if scope["type"] == "http" and idle is not None and idle():
            # what FastAPI.__call__ does when its instrumentation is idle
            if self.root_path:
                scope["root_path"] = self.root_path
            await Starlette.__call__(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)


_UNKNOWN = object()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()  # a bad variable fails here, naming it
    if settings.log_format:  # `trigger api` (and each of its workers)
        configure_logging(settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, settings.database_url)
        engine = await Engine.open(settings.database_url, settings.engine,
                                   pool_size=settings.pool_size)
        key_cache = KeyCache()
        engine.notifier.listen(auth.CHANNEL, key_cache.listener())
        state = ApiState(
            settings=settings,
            engine=engine,
            key_cache=key_cache,
            auth_throttle=FailureThrottle(settings.auth_failures_per_minute),
            caps=StreamCaps(settings.max_sse_per_env, settings.max_long_polls_per_env),
        )
        install(app, state)
        await engine.start()
        # What start-up built (modules, routes, models, the pool) lives as long as the process:
        # out of the collector's way, so that a full collection walks only what requests
        # allocate (62 ms for one, measured under the latency bench, when it walked it all).
        gc.freeze()
        try:
            yield
        finally:
            if state.electric is not None:
                await state.electric.stop()
            await engine.stop()

    app = TriggerAPI(
        title="trigger-worker API",
        version="0.1.0",
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
    )

    guards.install(app)
    app.add_middleware(RequestContextMiddleware)
    app.openapi = lambda: openapi_doc.build(app)  # type: ignore[method-assign]

    @app.exception_handler(EngineError)
    async def engine_error(_: Request, exc: EngineError) -> ORJSONResponse:
        return ORJSONResponse({"error": exc.message}, status_code=errors.status_of(exc),
                              headers=errors.headers_of(exc))

    @app.exception_handler(AuthError)
    async def auth_error(_: Request, exc: AuthError) -> ORJSONResponse:
        return ORJSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> ORJSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        return ORJSONResponse({"error": f"invalid request: {problems}"}, status_code=422)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return json_response({"ok": True})

    # routes are matched in order, router by router: the worker protocol's (the most
    # frequent requests, no path shared with any other router) first
    app.include_router(routes_worker.router)
    app.include_router(routes_public.router)
    app.include_router(routes_schedules.router)
    app.include_router(routes_metadata.router)
    app.include_router(routes_realtime.router)
    app.include_router(routes_queues.router)
    app.include_router(routes_waitpoints.router)
    app.include_router(routes_sdk.router)
    app.include_router(routes_batches_v2.router)
    app.include_router(routes_envvars.router)
    app.include_router(routes_keys.router)
    app.include_router(routes_tasks.router)
    app.include_router(routes_traces.router)
    app.include_router(routes_metrics.router)
    dashboard.mount(app)
    return app
