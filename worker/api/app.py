"""The FastAPI application: lifespan (migrations, pool, notifier, services) and error mapping."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response

from worker.api import (
    dashboard,
    errors,
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
from worker.api.settings import Settings
from worker.api.stream_caps import StreamCaps
from worker.engine.db import open_pool
from worker.engine.errors import EngineError
from worker.engine.leases import LeaseSettings
from worker.engine.migrate import migrate
from worker.engine.notifier import Notifier
from worker.engine.realtime import RealtimeHub
from worker.engine.services.alerter import AlertSettings, run_alerter
from worker.engine.services.cron_trigger import run_cron_trigger
from worker.engine.services.expirer import run_expirer
from worker.engine.services.rescuer import run_rescuer
from worker.engine.services.retention import run_retention
from worker.engine.services.scheduler import run_scheduler
from worker.engine.services.versions import run_version_sweep
from worker.engine.services.waitpoint_timer import run_waitpoint_timer
from worker.engine.spans import run_span_retention

log = logging.getLogger(__name__)


class ORJSONResponse(Response):
    """JSON rendered by orjson (fast, and handles datetimes and UUIDs)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    if os.environ.get("TRIGGER_LOG_FORMAT"):  # `trigger api` (and each of its workers)
        configure_logging(os.environ["TRIGGER_LOG_FORMAT"])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, settings.database_url)
        app.state.pool = await open_pool(settings.database_url, max_size=settings.pool_size)
        app.state.notifier = Notifier(settings.database_url)
        await app.state.notifier.start()
        app.state.lease = LeaseSettings(settings.lease_seconds, settings.heartbeat_seconds)
        app.state.key_cache = KeyCache(settings.database_url)
        await app.state.key_cache.start()
        app.state.auth_throttle = FailureThrottle()
        app.state.caps = StreamCaps.from_env()
        app.state.public_url = settings.public_url
        app.state.realtime = RealtimeHub(settings.database_url)  # connects on first subscriber
        app.state.electric = None  # shape-protocol change logs, made on first use
        services = [
            asyncio.create_task(run_rescuer(app.state.pool, settings.rescuer_interval)),
            asyncio.create_task(run_scheduler(app.state.pool, settings.scheduler_max_sleep)),
            asyncio.create_task(run_expirer(app.state.pool, settings.expirer_interval)),
            asyncio.create_task(run_waitpoint_timer(app.state.pool, settings.scheduler_max_sleep)),
            asyncio.create_task(run_cron_trigger(app.state.pool)),
            asyncio.create_task(run_version_sweep(app.state.pool, settings.rescuer_interval)),
            asyncio.create_task(run_alerter(app.state.pool, AlertSettings.from_env())),
            asyncio.create_task(run_retention(app.state.pool)),
            asyncio.create_task(run_span_retention(app.state.pool)),
        ]
        try:
            yield
        finally:
            for service in services:
                service.cancel()
            for service in services:
                with contextlib.suppress(asyncio.CancelledError):
                    await service
            await app.state.notifier.stop()
            await app.state.key_cache.stop()
            if getattr(app.state, "electric", None) is not None:
                await app.state.electric.stop()
            await app.state.realtime.stop()
            await app.state.pool.close()

    app = FastAPI(
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
    async def healthz() -> dict[str, Any]:
        return {"ok": True}

    app.include_router(routes_public.router)
    app.include_router(routes_worker.router)
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
