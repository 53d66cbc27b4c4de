"""Trigger-time validation of payloads against a schema task's JSON schema.

Trigger.dev only fails such a run later, in the worker; we answer 422 at once, naming the
field, so the caller can fix the request. The worker validates again with the pydantic model.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator

from worker.engine.errors import EngineError, Kind


class InvalidPayload(EngineError):
    kind = Kind.unprocessable


@lru_cache(maxsize=512)
def _validator(schema_json: bytes) -> Draft202012Validator:
    return Draft202012Validator(orjson.loads(schema_json))


def check_payload(
    task_id: str, definition: dict[str, Any], payload: Any, payload_type: str
) -> None:
    schema = definition.get("payload_schema")
    if not schema or payload_type != "application/json":
        return
    validator = _validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS))
    errors = sorted(validator.iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.path) or 'payload'}: {err.message}"
            for err in errors[:5]
        )
        raise InvalidPayload(f"payload does not match the schema of task {task_id!r}: {problems}")
