"""The API's fast lane (worker/api/fast_lane.py) picks the route FastAPI would, takes only the
routes it can call exactly as FastAPI does, and answers as FastAPI did: through the real API
process over HTTP."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import routing as fastapi_routing
from starlette.routing import Match

from tests.conftest import ApiServer
from worker.api import fast_lane
from worker.api.app import create_app
from worker.api.settings import Settings

HOT = {("POST", "/engine/v1/worker/dequeue"), ("POST", "/engine/v1/worker/complete"),
       ("POST", "/engine/v1/worker/heartbeat"), ("POST", "/api/v1/tasks/{task_id}/trigger"),
       ("POST", "/api/v1/tasks/{task_id}/batch"), ("GET", "/api/v3/runs/{run_id}"),
       ("GET", "/healthz")}


def _fastapi_pick(app: object, method: str, path: str) -> object | None:
    """The route FastAPI's own router selects (its first full match, in order)."""
    scope = {"type": "http", "method": method, "path": path, "root_path": "", "headers": [],
             "query_string": b""}
    for top in app.router.routes:  # type: ignore[attr-defined]
        match, _ = top.matches(scope)
        if match == Match.FULL:
            if hasattr(top, "_match"):  # an included router: the route inside it
                return top._match(scope)[2]
            return top
    return None


def test_the_index_picks_the_route_fastapi_picks() -> None:
    app = create_app(Settings(database_url="postgresql://unused/db"))
    index = fast_lane.RouteIndex(app.router.routes)
    lanes = {(m, lane.route.path) for lane in index.lanes for m in lane.route.methods}
    assert lanes >= HOT, HOT - lanes
    paths = set()
    for route in fastapi_routing.iter_route_contexts(app.router.routes) \
            if hasattr(fastapi_routing, "iter_route_contexts") else app.router.routes:
        pattern = getattr(route, "path_format", None)
        if pattern:
            paths.add(re.sub(r"\{[^}]+\}", "x1", pattern))
            paths.add(re.sub(r"\{[^}]+\}", "x1", pattern) + "/")
    assert len(paths) > 50
    for path in sorted(paths):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
            lane = index.find(method, path)
            if lane is not None:
                assert _fastapi_pick(app, method, path) is lane.route, (method, path)


def test_dependency_overrides_send_requests_through_fastapi() -> None:
    """A route whose dependencies are overridden (tests do that) is FastAPI's again."""
    app = create_app(Settings(database_url="postgresql://unused/db"))
    index = fast_lane.RouteIndex(app.router.routes)
    assert index.find("POST", "/engine/v1/worker/dequeue") is not None
    assert index.find("GET", "/api/v9/nothing") is None  # 404s stay FastAPI's
    assert index.find("PATCH", "/engine/v1/worker/dequeue") is None  # and 405s


def test_fast_lane_answers_as_fastapi_did(api_server: ApiServer) -> None:
    key = api_server.keys["dev"]
    with httpx.Client(base_url=api_server.url, timeout=10) as http:
        health = http.get("/healthz")
        assert health.status_code == 200 and health.json() == {"ok": True}
        assert health.headers["content-type"] == "application/json"
        assert len(health.headers["x-request-id"]) == 16
        # no key: the auth dependency's 401, through the same exception handler
        missing = http.get("/api/v3/runs/run_x", headers={"x-request-id": "fast-1"})
        assert missing.status_code == 401 and "missing API key" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.headers["x-request-id"] == "fast-1"
        # a path parameter, and the engine's 404 in the documented {"error"} shape
        auth = {"Authorization": f"Bearer {key}"}
        gone = http.get("/api/v3/runs/run_nope", headers=auth)
        assert gone.status_code == 404 and "run_nope" in gone.json()["error"]
        # an invalid body: 422 as before
        bad = http.post("/engine/v1/worker/dequeue", headers=auth, json={"versions": []})
        assert bad.status_code == 422 and "error" in bad.json()
        # FastAPI's own 404 and 405 for what the lane does not take
        assert http.get("/api/v9/nothing", headers=auth).json() == {"error": "Not Found"}
        wrong = http.put("/engine/v1/worker/dequeue", headers=auth)
        assert wrong.status_code == 405 and wrong.json() == {"error": "Method Not Allowed"}


@pytest.mark.parametrize("path", ["/api/v3/runs/run%00x", "/api/v3/runs/run_x?q=%00"])
def test_nul_in_the_url_is_refused_before_the_lane(api_server: ApiServer, path: str) -> None:
    reply = httpx.get(f"{api_server.url}{path}",
                      headers={"Authorization": f"Bearer {api_server.keys['dev']}"})
    assert reply.status_code == 400 and "NUL" in reply.json()["error"]
