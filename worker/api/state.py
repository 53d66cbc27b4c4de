"""What the routes reach on ``app.state``, typed: one :class:`ApiState` built at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, FastAPI, Request

from worker.engine.engine import Engine

if TYPE_CHECKING:
    from worker.api.auth import FailureThrottle, KeyCache
    from worker.api.electric_log import ElectricLogs
    from worker.api.settings import Settings
    from worker.api.stream_caps import StreamCaps


@dataclass
class ApiState:
    settings: Settings
    engine: Engine
    key_cache: KeyCache
    auth_throttle: FailureThrottle
    caps: StreamCaps
    #: the shape protocol's change logs (routes_electric.py), made on first use
    electric: ElectricLogs | None = None


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


def install(app: FastAPI, state: ApiState) -> None:
    app.state.api = state


def engine_of(request: Request) -> Engine:
    """The process's engine (a FastAPI dependency: :data:`EngineDep`)."""
    return api_state(request).engine


EngineDep = Annotated[Engine, Depends(engine_of)]
