"""The served OpenAPI document (``/openapi.json``, browsable at ``/docs``).

Both are public: the document describes the API and holds no secret (docs/api.md says so).
It declares the bearer scheme (so "Try it out" sends your key) on every operation but health
and the waitpoint callback, the request bodies the routes read themselves, and the
``{"error": ...}`` answers every operation may give.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from worker.api import routes_public, routes_queues, routes_waitpoints, routes_worker
from worker.api.schedule_shapes import ScheduleBody
from worker.engine.models import BatchBody, TriggerBody

#: (method, path) -> the model its body is read into
_BODIES: dict[tuple[str, str], type[BaseModel]] = {
    ("post", "/api/v1/tasks/{task_id}/trigger"): TriggerBody,
    ("post", "/api/v1/tasks/{task_id}/batch"): BatchBody,
    ("post", "/api/v2/tasks/batch"): BatchBody,
    ("post", "/api/v1/runs/{run_id}/reschedule"): routes_public.RescheduleBody,
    ("post", "/api/v1/idempotencyKeys/{key}/reset"): routes_public.ResetKeyBody,
    ("post", "/api/v1/queues/{name}/pause"): routes_queues.PauseBody,
    ("post", "/api/v1/queues/{name}/concurrency/override"): routes_queues.OverrideBody,
    ("post", "/api/v1/schedules"): ScheduleBody,
    ("put", "/api/v1/schedules/{schedule_id}"): ScheduleBody,
    ("post", "/api/v1/waitpoints/tokens"): routes_waitpoints.CreateToken,
    ("post", "/api/v1/waitpoints/tokens/{waitpoint_id}/complete"): routes_waitpoints.CompleteToken,
    ("post", "/engine/v1/runs/{run_id}/wait"): routes_waitpoints.WaitBody,
    ("post", "/engine/v1/runs/{run_id}/journal"): routes_waitpoints.JournalBody,
    ("post", "/engine/v1/runs/{run_id}/checkpoint"): routes_waitpoints.CheckpointBody,
    ("post", "/engine/v1/worker/register"): routes_worker.RegisterBody,
    ("post", "/engine/v1/worker/dequeue"): routes_worker.DequeueBody,
    ("post", "/engine/v1/worker/heartbeat"): routes_worker.RunIdsBody,
    ("post", "/engine/v1/worker/release"): routes_worker.RunIdsBody,
    ("post", "/engine/v1/worker/complete"): routes_worker.CompleteBody,
    ("post", "/engine/v1/worker/logs"): routes_worker.LogsBody,
}
#: bodies read as free JSON: a schema of their documented shape
_FREE_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/api/v1/runs/{run_id}/metadata"): {
        "type": "object",
        "properties": {
            "metadata": {"type": "object"},
            "operations": {"type": "array", "items": {"type": "object"}},
            "parentOperations": {"type": "array", "items": {"type": "object"}},
            "rootOperations": {"type": "array", "items": {"type": "object"}},
        },
    },
    ("post", "/realtime/v1/streams/{run_id}/{stream}"): {
        "type": "object",
        "properties": {"chunks": {"type": "array"}, "done": {"type": "boolean"}},
    },
    ("post", "/api/v1/auth/public-tokens"): {
        "type": "object",
        "properties": {
            "scopes": {"type": "array", "items": {"type": "string"}},
            "expirationTime": {"type": ["string", "integer"]},
        },
    },
}
_ERROR = {"$ref": "#/components/schemas/Error"}
#: every documented answer other than success: a JSON ``{"error": ...}``
_ERROR_STATUSES = {
    "400": "Bad request: the message says what to fix",
    "401": "Missing or invalid key",
    "403": "The key or token does not grant this",
    "404": "Not found in this environment",
    "409": "Conflicts with the current state",
    "413": "Body or value too large",
    "422": "Invalid request body",
    "431": "Request headers too large",
}
_PUBLIC = {"/api/v1/waitpoints/tokens/{waitpoint_id}/callback/{digest}"}


def _schema_of(model: type[BaseModel], components: dict[str, Any]) -> dict[str, object]:
    schema = model.model_json_schema(by_alias=True, ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    return schema


def build(app: FastAPI) -> dict[str, object]:
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["Error"] = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "requestId": {"type": "string"}},
        "required": ["error"],
    }
    components["securitySchemes"] = {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "A secret key (tr_dev_… / tr_prod_…) or a public access token",
        }
    }
    for path, item in doc.get("paths", {}).items():
        for method, operation in item.items():
            if method not in ("get", "post", "put", "delete", "patch"):
                continue
            model = _BODIES.get((method, path))
            body = _schema_of(model, schemas) if model else _FREE_BODIES.get((method, path))
            if body is not None:
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                }
            if path not in _PUBLIC:
                operation["security"] = [{"bearerAuth": []}]
            responses = operation.setdefault("responses", {})
            for status, response in responses.items():
                # orjson responses are documented as a string: every route answers an object
                content = response.get("content", {}).get("application/json")
                if status.startswith("2") and content and content.get("schema") == {
                    "type": "string"
                }:
                    content["schema"] = {"type": "object"}
            for status, text in _ERROR_STATUSES.items():
                responses[status] = {
                    "description": text,
                    "content": {"application/json": {"schema": _ERROR}},
                }
            if path.startswith("/otel/"):  # OTLP/HTTP ingest (routes_traces.py): protobuf only
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/x-protobuf": {
                        "schema": {"type": "string", "format": "binary"}}},
                }
                responses["200"] = {
                    "description": "The OTLP Export…ServiceResponse",
                    "content": {"application/x-protobuf": {
                        "schema": {"type": "string", "format": "binary"}}},
                }
                responses["415"] = {
                    "description": "Not protobuf: OTLP/HTTP here takes application/x-protobuf",
                    "content": {"application/json": {"schema": _ERROR}},
                }
    doc["components"]["schemas"].pop("HTTPValidationError", None)
    doc["components"]["schemas"].pop("ValidationError", None)
    app.openapi_schema = doc
    return doc
