"""The payload schemas ``schema_task`` accepts (Trigger.dev takes zod, yup, valibot, ...).

Every accepted form is adapted to one small interface, the one a pydantic model already has:
``model_validate(data)`` (what ``run`` receives, raising on a bad payload) and
``model_json_schema()`` (the JSON schema the manifest carries, so the API refuses a bad payload
at trigger time with a 422 — or ``None`` where none can be derived). Accepted:

* a pydantic ``BaseModel`` class (used as it is): ``run`` gets a model instance;
* a pydantic ``TypeAdapter``;
* a dataclass, a ``TypedDict`` or any other type pydantic can validate (through a
  ``TypeAdapter``): ``run`` gets the dataclass instance / the dict;
* a JSON-schema ``dict``: validated with ``jsonschema``; ``run`` gets the payload as sent;
* a plain callable ``parse(data) -> value`` that raises on a bad payload: no JSON schema, so
  the payload is checked only in the worker (the run fails with ``TASK_INPUT_ERROR``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, get_type_hints, is_typeddict

if TYPE_CHECKING:
    import pydantic


class SchemaLike(Protocol):
    def model_validate(self, data: object) -> Any: ...

    def model_json_schema(self) -> dict[str, object] | None: ...


class _AdapterSchema:
    """A pydantic ``TypeAdapter`` (also made for dataclasses, TypedDicts, other types)."""

    def __init__(self, adapter: pydantic.TypeAdapter[Any], name: str) -> None:
        self.adapter, self.name = adapter, name

    def model_validate(self, data: object) -> Any:
        return self.adapter.validate_python(data)

    def model_json_schema(self) -> dict[str, object] | None:
        try:
            schema: dict[str, object] = self.adapter.json_schema()
        except Exception:  # a type with no JSON form (e.g. arbitrary classes): worker-only
            return None
        return schema

    def __repr__(self) -> str:
        return f"<schema {self.name}>"


class _JsonSchema:
    """A JSON-schema dict: the same validator the API uses at trigger time."""

    def __init__(self, schema: dict[str, object]) -> None:
        from jsonschema import Draft202012Validator

        Draft202012Validator.check_schema(schema)  # a broken schema fails at declaration
        self.schema = schema
        self.validator = Draft202012Validator(schema)

    def model_validate(self, data: object) -> Any:
        errors = sorted(self.validator.iter_errors(data), key=lambda e: list(e.path))
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e.path) or 'payload'}: {e.message}" for e in errors[:5]
            )
            raise ValueError(f"payload does not match the schema: {problems}")
        return data

    def model_json_schema(self) -> dict[str, object]:
        return self.schema


class _CallableSchema:
    def __init__(self, parse: Callable[[Any], Any]) -> None:
        self.parse = parse

    def model_validate(self, data: object) -> Any:
        return self.parse(data)

    def model_json_schema(self) -> None:
        return None


def _pydantic_typeddict(schema: Any) -> Any:
    """pydantic refuses ``typing.TypedDict`` before Python 3.12: the same fields as a
    ``typing_extensions.TypedDict`` (optional keys kept optional)."""
    import typing_extensions

    hints = get_type_hints(schema)
    fields = {k: v if k in schema.__required_keys__ else typing_extensions.NotRequired[v]
              for k, v in hints.items()}
    return typing_extensions.TypedDict(schema.__name__, fields)  # type: ignore[operator]


def adapt(schema: Any) -> SchemaLike:
    """The :class:`SchemaLike` for any accepted form; ``TypeError`` naming the accepted ones."""
    if hasattr(schema, "model_validate") and hasattr(schema, "model_json_schema"):
        return schema  # type: ignore[no-any-return,unused-ignore]  # a pydantic model
    from pydantic import TypeAdapter

    if isinstance(schema, TypeAdapter):
        return _AdapterSchema(schema, "TypeAdapter")
    if isinstance(schema, dict):
        return _JsonSchema(schema)
    if inspect.isclass(schema) and dataclasses.is_dataclass(schema):
        return _AdapterSchema(TypeAdapter(schema), schema.__name__)
    if is_typeddict(schema):
        return _AdapterSchema(TypeAdapter(_pydantic_typeddict(schema)), schema.__name__)
    if callable(schema) and not inspect.isclass(schema):
        return _CallableSchema(schema)
    if inspect.isclass(schema) or hasattr(schema, "__origin__"):
        try:
            return _AdapterSchema(TypeAdapter(schema), getattr(schema, "__name__", repr(schema)))
        except Exception:
            pass
    raise TypeError(
        "schema must be a pydantic BaseModel class, a pydantic TypeAdapter, a dataclass, a "
        "TypedDict, a JSON-schema dict or a function that parses the payload (raising when it "
        f"is invalid); got {schema!r}"
    )
