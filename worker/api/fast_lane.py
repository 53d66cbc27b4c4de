"""The hot routes without FastAPI's per-request machinery, with the same outcome.

FastAPI spends about half a millisecond of CPU (on a slow core) on every request before and
after the handler: it walks every included router twice to find the route (a growing cost
for routes further down the list), wraps the call in two exit stacks and an exception
wrapper, and resolves the dependencies through its general solver. For a route whose
signature is simple, all of that has a short equivalent, computed once at start:

* the route is found with one regular expression per HTTP method: every route of the app,
  in FastAPI's order, one alternative each, so the first alternative that matches is the
  route FastAPI would pick (its first full match: path and method);
* a route takes the short path ("fast lane") only when FastAPI would do nothing with it
  but call it: an ``async def`` returning a ``Response`` (annotated so: FastAPI hands such a
  response on untouched), whose parameters are the ``Request``, ``str`` path parameters
  without constraints, and dependencies that are ``async def`` functions of the
  ``Request`` alone; no body, query, header or cookie parameters, no body-size limit of
  the route or its router, no ``yield`` dependencies, no security scopes;
* anything else (another route, no route: 404 / 405 / slash redirects, dependency
  overrides set, FastAPI's own OpenTelemetry instrumentation active) goes through FastAPI
  as before.

It sits where FastAPI's router sits, inside Starlette's ``ExceptionMiddleware``: an
exception of the handler or a dependency reaches the same exception handlers, and every
middleware (request ids, limits, errors) runs as before. The scope gets what FastAPI's
routing gives it (``route``, ``endpoint``, ``path_params``, ``router``).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor
from starlette.responses import Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

_NAMED_GROUP = re.compile(r"\(\?P<[^>]+>")
#: Dependant fields the fast lane knows how to honour; any other one set: not eligible
_KNOWN = {"path_params", "dependencies", "name", "call", "request_param_name", "use_cache",
          "path", "scope", "concurrency"}


@dataclasses.dataclass(frozen=True)
class _Lane:
    """One eligible route: what FastAPI would call, and with what."""

    route: APIRoute
    endpoint: Callable[..., Any]
    regex: re.Pattern[str]
    request_param: str | None
    path_params: tuple[str, ...]
    #: (parameter name, async callable, its request parameter name, cached per request)
    dependencies: tuple[tuple[str, Callable[..., Any], str | None, bool], ...]


@dataclasses.dataclass
class _Entry:
    regex: re.Pattern[str]
    methods: frozenset[str] | None
    lane: _Lane | None  # None: FastAPI handles it


def _unset(dependant: Any, allowed: set[str]) -> bool:
    """Every field of ``dependant`` outside ``allowed`` has its default value."""
    if not dataclasses.is_dataclass(dependant):
        return False
    for f in dataclasses.fields(dependant):
        if f.name in allowed:
            continue
        value = getattr(dependant, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        if value != default and (value or default):  # [] for None: nothing set either
            return False
    return True


def _plain_async(call: Any) -> bool:
    return (inspect.iscoroutinefunction(call) and not inspect.isasyncgenfunction(call)
            and not inspect.isclass(call))


def _lane_of(route: APIRoute, context: Any) -> _Lane | None:
    """The fast lane for ``route`` (``context``: FastAPI's effective route context of an
    included router, or the route itself), or None when FastAPI must handle it."""
    dependant = getattr(context, "dependant", None) or route.dependant
    endpoint = route.endpoint
    if dependant.call is not endpoint or not _plain_async(endpoint):
        return None
    returns = inspect.signature(endpoint, eval_str=True).return_annotation
    if not (inspect.isclass(returns) and issubclass(returns, Response)):
        return None
    if getattr(context, "max_body_size", None) is not None:
        return None
    if not _unset(dependant, _KNOWN):
        return None
    regex = getattr(context, "path_regex", None) or route.path_regex
    convertors = getattr(context, "param_convertors", None) or route.param_convertors
    names = []
    for field in dependant.path_params:
        info = field.field_info
        if (field.alias != field.name or info.annotation is not str or info.metadata
                or not isinstance(convertors.get(field.name), StringConvertor)):
            return None
        names.append(field.name)
    dependencies: list[tuple[str, Callable[..., Any], str | None, bool]] = []
    for dep in dependant.dependencies:
        if (not _unset(dep, {"call", "name", "request_param_name", "use_cache", "scope",
                             "concurrency", "path"})
                or not _plain_async(dep.call) or dep.name is None or dep.call is None):
            return None
        dependencies.append((dep.name, dep.call, dep.request_param_name, dep.use_cache))
    return _Lane(route, endpoint, regex, dependant.request_param_name, tuple(names),
                 tuple(dependencies))


def _entries(routes: list[Any]) -> Iterator[_Entry | None]:
    """Every route as FastAPI tries them, in order (None: one the fast lane cannot reason
    about; nothing after it may take the fast lane)."""
    for top in routes:
        contexts = (top.effective_route_contexts() if hasattr(top, "effective_route_contexts")
                    else [top])
        for context in contexts:
            route = getattr(context, "original_route", context)
            if isinstance(route, WebSocketRoute) or type(route).__name__ == "APIWebSocketRoute":
                continue  # never matches an HTTP request
            if isinstance(route, APIRoute):
                regex = getattr(context, "path_regex", None) or route.path_regex
                methods = getattr(context, "methods", None) or route.methods
                yield _Entry(regex, frozenset(methods) if methods else None,
                             _lane_of(route, context))
                continue
            starlette_route = getattr(context, "starlette_route", None) or route
            if isinstance(starlette_route, Route):
                methods = starlette_route.methods
                yield _Entry(starlette_route.path_regex,
                             frozenset(methods) if methods else None, None)
            elif isinstance(starlette_route, Mount):
                yield _Entry(starlette_route.path_regex, None, None)
            else:
                yield None


def _combined(entries: list[_Entry]) -> re.Pattern[str] | None:
    """One alternation of the entries' patterns: alternative ``_N`` is entry N."""
    parts = []
    for i, entry in enumerate(entries):
        pattern = entry.regex.pattern
        if not (pattern.startswith("^") and pattern.endswith("$")) or "(?P=" in pattern:
            return None
        parts.append(f"(?P<_{i}>{_NAMED_GROUP.sub('(?:', pattern[1:-1])})")
    if not parts:
        return None
    return re.compile("|".join(parts))


class RouteIndex:
    """For each method, the combined pattern and the entries behind its alternatives."""

    def __init__(self, routes: list[Any]) -> None:
        entries: list[_Entry] = []
        for entry in _entries(routes):
            if entry is None:
                break  # unknown kind of route: it and everything after it go to FastAPI
            entries.append(entry)
        self.lanes = [e.lane for e in entries if e.lane is not None]
        methods: set[str] = set()
        for e in entries:
            methods |= e.methods or set()
        self._by_method: dict[str, tuple[re.Pattern[str], list[_Entry]] | None] = {}
        for method in methods:
            mine = [e for e in entries if e.methods is None or method in e.methods]
            pattern = _combined(mine)
            self._by_method[method] = (pattern, mine) if pattern is not None else None

    def find(self, method: str, path: str) -> _Lane | None:
        """The route FastAPI would pick, when it takes the fast lane; else None."""
        found = self._by_method.get(method)
        if found is None:
            return None
        match = found[0].fullmatch(path)
        if match is None:
            return None
        name = match.lastgroup
        return found[1][int(name[1:])].lane if name else None


class FastLane:
    """The innermost ASGI app: the fast lane, else ``fallback`` (FastAPI's router)."""

    def __init__(self, app: FastAPI, fallback: ASGIApp) -> None:
        self.app = app
        self.fallback = fallback
        self.router = app.router
        self._index: RouteIndex | None = None
        self._signature: tuple[int, int] | None = None

    def index(self) -> RouteIndex:
        """Built on first use; again if routes were added to the app since."""
        signature = (len(self.router.routes), getattr(self.router, "_routes_version", 0))
        if self._index is None or signature != self._signature:
            self._index = RouteIndex(self.router.routes)
            self._signature = signature
        return self._index

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = None
        if (scope["type"] == "http" and not self.app.dependency_overrides
                and "fastapi.telemetry" not in scope):
            path = scope["path"]
            root = scope.get("root_path", "")
            if root:  # as starlette's get_route_path
                path = path[len(root):] if path.startswith(root) else path
            lane = self.index().find(scope["method"], path)
        if lane is None:
            await self.fallback(scope, receive, send)
            return
        match = lane.regex.match(path)
        assert match is not None
        params = dict(scope.get("path_params") or {})
        params.update(match.groupdict())
        scope["endpoint"] = lane.endpoint
        scope["path_params"] = params
        scope["route"] = lane.route
        if "router" not in scope:
            scope["router"] = self.router
        request = Request(scope, receive, send)
        values: dict[str, Any] = {}
        solved: dict[Any, Any] = {}
        for name, call, request_name, cached in lane.dependencies:
            if cached and call in solved:  # FastAPI's per-request dependency cache
                values[name] = solved[call]
                continue
            value = await (call(**{request_name: request}) if request_name else call())
            values[name] = value
            solved.setdefault(call, value)
        if lane.request_param:
            values[lane.request_param] = request
        for name in lane.path_params:
            values[name] = params[name]
        response = await lane.endpoint(**values)
        if not isinstance(response, Response):
            raise TypeError(f"{lane.route.path}: the handler is annotated to return a "
                            f"Response and returned {type(response).__name__}")
        await response(scope, receive, send)


def install(app: FastAPI, stack: ASGIApp) -> ASGIApp:
    """``stack`` (FastAPI's middleware stack) with its innermost app behind the fast lane:
    put inside Starlette's ExceptionMiddleware, replacing what that wraps."""
    from starlette.middleware.exceptions import ExceptionMiddleware

    layer: Any = stack
    while layer is not None and not isinstance(layer, ExceptionMiddleware):
        layer = getattr(layer, "app", None)
    if layer is None:
        log.warning("fast lane not installed: no ExceptionMiddleware in the stack")
        return stack
    layer.app = FastLane(app, layer.app)
    return stack


_PROVIDER_VARIABLES = ("OTEL_PYTHON_TRACER_PROVIDER", "OTEL_PYTHON_METER_PROVIDER",
                       "OTEL_PYTHON_LOGGER_PROVIDER")


def telemetry_idle(app: FastAPI) -> Callable[[], bool] | None:
    """A cheap form of the test FastAPI makes on every request (``not
    app._native_telemetry.enabled()``: three provider look-ups reading os.environ): its
    OpenTelemetry instrumentation is idle while no tracer, meter or logger provider is set
    (the API process sets none). None when that cannot be told cheaply (a FastAPI without
    the instrumentation, a provider named in the configuration or the environment)."""
    import os

    config = getattr(app, "_telemetry", None)
    if config is None or getattr(app, "_native_telemetry", None) is None:
        return None
    if any(config.get(k) is not None for k in ("tracer_provider", "meter_provider",
                                                 "logger_provider")):
        return None
    if any(name in os.environ for name in _PROVIDER_VARIABLES):
        return None
    try:
        from opentelemetry import _logs, metrics, trace

        logs_state = _logs._internal
        metrics_state = metrics._internal
        for module, name in ((trace, "_TRACER_PROVIDER"), (metrics_state, "_METER_PROVIDER"),
                             (logs_state, "_LOGGER_PROVIDER")):
            if not hasattr(module, name):
                return None
    except (ImportError, AttributeError):
        return None
    tracing, metering, logging_ = (bool(config.get(k)) for k in ("tracing", "metrics", "logs"))

    def idle() -> bool:
        return ((not tracing or trace._TRACER_PROVIDER is None)
                and (not metering or metrics_state._METER_PROVIDER is None)
                and (not logging_ or logs_state._LOGGER_PROVIDER is None))

    return idle
