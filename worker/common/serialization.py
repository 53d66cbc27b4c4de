"""Payload/output serialisation: ``dumps(obj) -> (data, data_type)``, ``loads(data, data_type)``.

Two wire forms (docs/triggerdev-semantics.md, "IO packets"):

``application/json``
    Plain JSON, produced whenever the value is made only of ``dict`` (str keys), ``list``,
    ``str``, ``int`` (64-bit), finite ``float``, ``bool`` and ``None`` (tuples become lists).
    ``None`` is ``("null", "application/json")``; an empty/absent ``data`` loads as ``None``.

``application/super+json``
    The SuperJSON envelope ``{"json": <plain JSON>, "meta": {"values": <annotations>}}`` used by
    Trigger.dev, so any SuperJSON reader can walk it. Annotations are SuperJSON's tree: a leaf is
    ``[type]``, an inner node ``[type, {child_path: tree}]``, and at the root either one tree
    (the root value itself is transformed) or ``{path: tree}``. Paths are dot-joined keys with
    ``\\`` and ``.`` escaped by a backslash. SuperJSON's own types are used where Python has an
    exact match: ``"Date"`` (datetime -> its ISO text, offset and microseconds kept, which
    JavaScript's ``new Date`` reads), ``"set"`` (set/frozenset -> list), ``"map"`` (dict with
    non-str keys -> list of ``[key, value]`` pairs), ``"bigint"`` (ints beyond 64 bits ->
    decimal string), ``"number"`` (NaN/±Infinity -> ``"NaN"``, ``"Infinity"``,
    ``"-Infinity"``). Python-only types are ``["custom", name]``: ``date``/``time`` (ISO text,
    tz and microseconds kept),
    ``timedelta`` (``[days, seconds, microseconds]``), ``UUID`` (text), ``Decimal`` (text),
    ``bytes`` (base64); Trigger.dev's TypeScript SDK cannot read these custom types. Reading
    also accepts ``["custom", "datetime"]`` (older data) and ``"undefined"``.

Pydantic models and dataclasses are written as their fields (they load back as dicts); enums
as their value. Anything else raises ``TypeError`` naming the type and where it is
(``$.items[3].when``). ``text/plain`` loads as the string itself.

The plain case is the hot path: one ``orjson.dumps`` plus a C-level round-trip check
(``orjson.loads(out) == obj``), which catches what orjson would silently change (UUID -> str,
NaN -> null, tuple -> list); only then does the Python walker run.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import math
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

JSON = "application/json"
SUPER_JSON = "application/super+json"
TEXT = "text/plain"
STORE = "application/store"

_FAST_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
_INT64_MIN = -(2**63)
_UINT64_MAX = 2**64 - 1
_MAX_DEPTH = 200


class _NotPlain(Exception):
    pass


def _refuse(_: Any) -> Any:
    raise _NotPlain


def dumps(obj: Any) -> tuple[str, str]:
    """Serialise ``obj``; return ``(data, data_type)``. Raises ``TypeError`` if it cannot."""
    if obj is None:
        return "null", JSON
    try:
        raw = orjson.dumps(obj, default=_refuse, option=_FAST_OPTIONS)
        if orjson.loads(raw) == obj:
            return raw.decode(), JSON
    except (_NotPlain, orjson.JSONEncodeError):
        pass
    value, annotations = _Encoder().encode(obj, "$", 0)
    if annotations is None:
        return orjson.dumps(value).decode(), JSON
    envelope = {"json": value, "meta": {"values": annotations}}
    return orjson.dumps(envelope).decode(), SUPER_JSON


def loads(data: str | bytes | None, data_type: str = JSON) -> Any:
    """Deserialise what :func:`dumps` (or a Trigger.dev SDK) produced."""
    if data_type == TEXT:
        return data.decode() if isinstance(data, bytes) else (data or "")
    if data is None or data == "" or data == b"":
        return None
    if data_type == JSON or data_type == "":
        return orjson.loads(data)
    if data_type == SUPER_JSON:
        envelope = orjson.loads(data)
        if not isinstance(envelope, dict) or "json" not in envelope:
            raise ValueError("application/super+json data must be an object with a 'json' key")
        value = envelope["json"]
        annotations = (envelope.get("meta") or {}).get("values")
        if annotations is None:
            return value
        if isinstance(annotations, list):
            return _apply_tree(value, annotations)
        return _apply_children(value, annotations)
    if data_type == STORE:
        raise ValueError(f"data of type {STORE} is a storage path; fetch it before loading")
    raise ValueError(f"unknown data type {data_type!r}")


# --- encoding -----------------------------------------------------------------------------

Tree = list[Any]


def _escape(key: str) -> str:
    return key.replace("\\", "\\\\").replace(".", "\\.")


def _custom(name: str) -> list[str]:
    return ["custom", name]


class _Encoder:
    """Walks a value, returning (plain JSON value, SuperJSON annotations or None)."""

    def __init__(self) -> None:
        self._stack: set[int] = set()

    def encode(self, obj: Any, path: str, depth: int) -> tuple[Any, Any]:
        if depth > _MAX_DEPTH:
            raise TypeError(f"cannot serialise: nesting deeper than {_MAX_DEPTH} at {path}")
        t = type(obj)
        if obj is None or t is str or t is bool:
            return obj, None
        if t is int:
            if _INT64_MIN <= obj <= _UINT64_MAX:
                return obj, None
            return str(obj), ["bigint"]
        if t is float:
            if math.isfinite(obj):
                return obj, None
            return ("NaN" if obj != obj else ("Infinity" if obj > 0 else "-Infinity")), ["number"]
        if t is dict or t is list or t is tuple or t is set or t is frozenset:
            return self._container(obj, path, depth)
        scalar = _encode_scalar(obj)
        if scalar is not None:
            return scalar
        if isinstance(obj, enum.Enum):
            return self.encode(obj.value, path, depth + 1)
        for base in (str, int, float):  # other subclasses of the JSON scalars
            if isinstance(obj, base):
                return self.encode(base(obj), path, depth + 1)
        if isinstance(obj, dict | list | tuple | set | frozenset):
            return self._container(obj, path, depth)
        dump = getattr(obj, "model_dump", None)
        if callable(dump) and hasattr(type(obj), "model_fields"):
            return self.encode(dump(mode="python"), path, depth + 1)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
            return self.encode(fields, path, depth + 1)
        raise TypeError(
            f"cannot serialise object of type {t.__module__}.{t.__qualname__} at {path}; "
            "use JSON types, datetime, date, time, timedelta, UUID, Decimal, bytes, set, "
            "pydantic models or dataclasses"
        )

    def _container(self, obj: Any, path: str, depth: int) -> tuple[Any, Any]:
        ident = id(obj)
        if ident in self._stack:
            raise TypeError(f"cannot serialise: circular reference at {path}")
        self._stack.add(ident)
        try:
            if isinstance(obj, dict):
                if all(type(k) is str for k in obj):
                    return self._object(obj, path, depth)
                return self._map(obj, path, depth)
            out: list[Any] = []
            inner: dict[str, Any] = {}
            for index, item in enumerate(obj):
                value, tree = self.encode(item, f"{path}[{index}]", depth + 1)
                out.append(value)
                _merge(inner, str(index), tree)
            own = ["set"] if isinstance(obj, set | frozenset) else None
            return out, _node(own, inner)
        finally:
            self._stack.discard(ident)

    def _object(self, obj: dict[str, Any], path: str, depth: int) -> tuple[Any, Any]:
        out: dict[str, Any] = {}
        inner: dict[str, Any] = {}
        for key, item in obj.items():
            value, tree = self.encode(item, f"{path}.{key}", depth + 1)
            out[key] = value
            _merge(inner, _escape(key), tree)
        return out, _node(None, inner)

    def _map(self, obj: dict[Any, Any], path: str, depth: int) -> tuple[Any, Any]:
        pairs: list[Any] = []
        inner: dict[str, Any] = {}
        for index, (key, item) in enumerate(obj.items()):
            k, k_tree = self.encode(key, f"{path}<key {key!r}>", depth + 1)
            v, v_tree = self.encode(item, f"{path}[{key!r}]", depth + 1)
            pairs.append([k, v])
            _merge(inner, f"{index}.0", k_tree)
            _merge(inner, f"{index}.1", v_tree)
        return pairs, _node(["map"], inner)


def _encode_scalar(obj: Any) -> tuple[Any, Any] | None:
    if isinstance(obj, dt.datetime):
        # SuperJSON's own Date, so Trigger.dev's SDK reads it; the ISO text keeps the offset
        # and microseconds for Python readers (JavaScript keeps milliseconds)
        return obj.isoformat(), ["Date"]
    if isinstance(obj, dt.date):
        return obj.isoformat(), [_custom("date")]
    if isinstance(obj, dt.time):
        return obj.isoformat(), [_custom("time")]
    if isinstance(obj, dt.timedelta):
        return [obj.days, obj.seconds, obj.microseconds], [_custom("timedelta")]
    if isinstance(obj, uuid.UUID):
        return str(obj), [_custom("UUID")]
    if isinstance(obj, Decimal):
        return str(obj), [_custom("Decimal")]
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode(), [_custom("bytes")]
    return None


def _merge(inner: dict[str, Any], key: str, tree: Any) -> None:
    """Hoist a child's annotations into its parent's record (SuperJSON's minimised tree)."""
    if tree is None:
        return
    if isinstance(tree, list):
        inner[key] = tree
    else:
        for sub, sub_tree in tree.items():
            inner[f"{key}.{sub}"] = sub_tree


def _node(own: list[Any] | None, inner: dict[str, Any]) -> Any:
    if own is None:
        return inner or None
    return [own[0], inner] if inner else own


# --- decoding -----------------------------------------------------------------------------


def _parse_path(path: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\" and i + 1 < len(path):
            current.append(path[i + 1])
            i += 2
            continue
        if ch == ".":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    parts.append("".join(current))
    return parts


def _apply_tree(value: Any, tree: list[Any]) -> Any:
    if len(tree) > 1 and isinstance(tree[1], dict):
        value = _apply_children(value, tree[1])
    return _untransform(value, tree[0])


def _apply_children(root: Any, children: dict[str, Any]) -> Any:
    for path, tree in children.items():
        keys = _parse_path(path)
        parent: Any = None
        last: Any = None
        node = root
        for key in keys:
            parent, last = node, (int(key) if isinstance(node, list) else key)
            node = node[last]
        new = _apply_tree(node, tree)
        if parent is None:
            root = new
        else:
            parent[last] = new
    return root


def _hashable(value: Any) -> Any:
    return tuple(_hashable(v) for v in value) if isinstance(value, list) else value


_CUSTOM: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "timedelta": lambda v: dt.timedelta(days=v[0], seconds=v[1], microseconds=v[2]),
    "UUID": uuid.UUID,
    "Decimal": Decimal,
    "bytes": base64.b64decode,
}

_NUMBERS = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _untransform(value: Any, kind: Any) -> Any:
    if isinstance(kind, list):
        if kind[0] == "custom":
            decode = _CUSTOM.get(kind[1])
            if decode is None:
                raise ValueError(f"unknown custom SuperJSON type {kind[1]!r}")
            return decode(value)
        return value  # ["class", name], ["symbol", ...], typed arrays: keep the plain form
    if kind == "set":
        return {_hashable(v) for v in value}
    if kind == "map":
        return {_hashable(k): v for k, v in value}
    if kind == "bigint":
        return int(value)
    if kind == "number":
        return _NUMBERS.get(value, math.nan)
    if kind == "Date":
        return dt.datetime.fromisoformat(value)
    if kind == "undefined":
        return None
    return value  # "regexp", "Error", "URL": keep the plain form
