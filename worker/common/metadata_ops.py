"""Run metadata operations, shared by the engine (authoritative) and the SDK (local view).

Wire form (Trigger.dev's ``RunMetadataChangeOperation``):
``{"type": "set", "key": k, "value": v}``, ``{"type": "delete", "key": k}``,
``{"type": "append", "key": k, "value": v}`` (to an array; a missing key starts one),
``{"type": "remove", "key": k, "value": v}`` (every equal element of the array),
``{"type": "increment", "key": k, "value": n}`` (decrement is a negative increment),
``{"type": "update", "value": {...}}`` (replace the whole object).

A key starting with ``$.`` is a path into nested objects (``$.progress.percent``); any other
key is a top-level key as written.
"""

from __future__ import annotations

from typing import Any

import orjson

MAX_METADATA_BYTES = 256 * 1024
OPERATION_TYPES = frozenset({"set", "delete", "append", "remove", "increment", "update"})


class MetadataOperationError(ValueError):
    """An operation that cannot apply (bad shape, increment of a non-number, ...)."""


def _path(key: Any) -> list[str]:
    if not isinstance(key, str) or not key:
        raise MetadataOperationError("metadata operation needs a non-empty string 'key'")
    if key.startswith("$."):
        parts = key[2:].split(".")
        if not all(parts):
            raise MetadataOperationError(f"metadata key {key!r} has an empty path segment")
        return parts
    return [key]


def _parent(root: dict[str, Any], parts: list[str], create: bool) -> dict[str, Any] | None:
    node = root
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            if not create:
                return None
            child = node[part] = {}
        node = child
    return node


def apply_operations(metadata: dict[str, Any] | None, operations: list[Any]) -> dict[str, Any]:
    """Apply ``operations`` in order to a copy of ``metadata``."""
    current: dict[str, Any] = orjson.loads(orjson.dumps(metadata or {}))
    for op in operations:
        if not isinstance(op, dict) or op.get("type") not in OPERATION_TYPES:
            raise MetadataOperationError(
                f"metadata operation {op!r}: 'type' must be one of {sorted(OPERATION_TYPES)}"
            )
        kind = op["type"]
        if kind == "update":
            value = op.get("value")
            if not isinstance(value, dict):
                raise MetadataOperationError("metadata 'update' operation needs an object 'value'")
            current = orjson.loads(orjson.dumps(value))
            continue
        parts = _path(op.get("key"))
        name = parts[-1]
        if kind == "delete":
            parent = _parent(current, parts, create=False)
            if parent is not None:
                parent.pop(name, None)
            continue
        parent = _parent(current, parts, create=True)
        assert parent is not None
        value = op.get("value")
        if kind == "set":
            parent[name] = value
        elif kind == "append":
            existing = parent.get(name)
            if existing is None:
                parent[name] = [value]
            elif isinstance(existing, list):
                existing.append(value)
            else:
                parent[name] = [existing, value]
        elif kind == "remove":
            existing = parent.get(name)
            if isinstance(existing, list):
                parent[name] = [item for item in existing if item != value]
        elif kind == "increment":
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise MetadataOperationError(
                    f"metadata increment of {name!r} needs a number 'value'"
                )
            existing = parent.get(name, 0)
            if not isinstance(existing, int | float) or isinstance(existing, bool):
                raise MetadataOperationError(
                    f"metadata key {name!r} holds {existing!r}, not a number"
                )
            parent[name] = existing + value
    return current
