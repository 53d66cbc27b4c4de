"""Every limit on what clients send, and the checks for them, in one place.

docs/api.md ("Limits and validation") lists these for users. The rule for stored JSON
(payloads, metadata, outputs, stream chunks, log attributes, manifests) is one rule: nested at
most :data:`MAX_JSON_DEPTH` levels, no NUL character in a string or key (Postgres text and
jsonb cannot hold one), only finite numbers that fit 64 bits. A value that keeps the rule is
always renderable again (orjson renders up to 254 levels; responses wrap stored values in a few
more). Checks raise :class:`LimitError` (a ``ValueError``, so pydantic validators report it as
a 422); the engine turns it into its 400 / 413 errors.
"""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import orjson

#: deepest nesting of any JSON value stored or sent back (payload, metadata, output, chunk)
MAX_JSON_DEPTH = 128
#: a request body may wrap such a value in a few levels of its own (batch → item → options)
MAX_BODY_DEPTH = MAX_JSON_DEPTH + 8
#: largest request body; refused from Content-Length (or while streaming) before it is read
MAX_BODY_BYTES = 16 * 1024 * 1024
#: total size of the request line's headers; more answers 431
MAX_HEADER_BYTES = 32 * 1024
#: run metadata, as JSON: trigger-time metadata, the metadata PUT and completion flushes
MAX_METADATA_BYTES = 256 * 1024
#: a duration (delay, ttl, idempotencyKeyTTL, reschedule, timeouts, token expiry, periods)
MAX_DURATION = timedelta(days=3650)
#: trigger ``priority`` (seconds of head start in the queue), either way
MAX_PRIORITY_SECONDS = MAX_DURATION.total_seconds()
#: run ``maxDuration`` in seconds
MAX_RUN_DURATION_SECONDS = MAX_DURATION.total_seconds()
#: a concurrency key (one sub-queue per key)
MAX_CONCURRENCY_KEY_LENGTH = 512
#: a queue name
MAX_QUEUE_NAME_LENGTH = 256
#: an id or name sent in a request (task id, run id, version, schedule dedup key, ...)
MAX_NAME_LENGTH = 2048
#: highest page number of a paged list (``page``): beyond it nothing is ever listed
MAX_PAGE = 1_000_000
#: Postgres ``int``: attempt numbers, counts
MAX_INT32 = 2**31 - 1
#: longest retry backoff (a worker's decision or a task's retry config), ~24.8 days
MAX_RETRY_DELAY_MS = MAX_INT32
#: a log line's level name
MAX_LOG_LEVEL_LENGTH = 32
_INT64 = 2**63
#: the visible form a NUL character takes where text is sanitised instead of refused (logs)
NUL_ESCAPE = "\\u0000"


class LimitError(ValueError):
    """A value breaks a limit; ``status`` is the HTTP status it deserves (400 or 413)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def json_problem(value: Any, max_depth: int = MAX_JSON_DEPTH, nul_ok: bool = False) -> str | None:
    """Why ``value`` breaks the stored-JSON rule, or None. ``nul_ok`` for values stored as
    JSON text (a payload), where a NUL is escaped. Iterative: a 10,000-deep value cannot
    exhaust the stack here."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                return f"is nested more than {max_depth} levels deep"
            for key, child in node.items():
                if not isinstance(key, str):
                    return "has a key that is not a string"
                if not nul_ok and "\x00" in key:
                    return f"has a NUL character in key {key[:40]!r}"
                stack.append((child, depth + 1))
        elif isinstance(node, list | tuple):
            if depth > max_depth:
                return f"is nested more than {max_depth} levels deep"
            stack.extend((child, depth + 1) for child in node)
        elif isinstance(node, str):
            if not nul_ok and "\x00" in node:
                return "has a NUL character (\\u0000) in a string"
        elif isinstance(node, bool) or node is None:
            continue
        elif isinstance(node, int):
            if not -_INT64 <= node < _INT64:
                return f"has the integer {node} which does not fit 64 bits"
        elif isinstance(node, float):
            if not math.isfinite(node):
                return "has a number that is not finite (NaN or Infinity)"
        else:
            return f"holds a {type(node).__name__}, which is not JSON"
    return None


def check_json(
    value: Any, what: str, max_depth: int = MAX_JSON_DEPTH, nul_ok: bool = False
) -> None:
    problem = json_problem(value, max_depth, nul_ok)
    if problem:
        raise LimitError(f"{what} {problem}")


def text_depth_may_exceed(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """Cheap pre-check for JSON text: nesting needs an opening bracket per level, so text
    with at most ``max_depth`` of them cannot be too deep (counting runs at C speed)."""
    if isinstance(text, bytes):
        return text.count(b"[") + text.count(b"{") > max_depth
    return text.count("[") + text.count("{") > max_depth


def check_text(value: str, what: str, max_length: int = MAX_NAME_LENGTH) -> str:
    """A name or key stored as text: no NUL, not longer than ``max_length``."""
    if "\x00" in value:
        raise LimitError(f"{what} must not contain a NUL character (\\u0000)")
    if len(value) > max_length:
        raise LimitError(f"{what} is {len(value)} characters; the limit is {max_length}")
    return value


def clean_text(value: str) -> str:
    """Text that must be kept (a log line): a NUL becomes the visible escape ``\\u0000``."""
    return value.replace("\x00", NUL_ESCAPE) if "\x00" in value else value


def clean_json(value: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A JSON value that must be kept (log attributes) made storable: NUL escaped in strings
    and keys, non-finite and oversized numbers as their text, anything nested deeper than
    ``max_depth`` replaced by a note."""
    if json_problem(value, max_depth) is None:
        return value  # the common case: nothing to copy

    def clean(node: Any, depth: int) -> Any:
        if isinstance(node, dict | list | tuple) and depth > max_depth:
            return f"[nested more than {max_depth} levels: dropped]"
        if isinstance(node, dict):
            return {clean_text(str(k)): clean(v, depth + 1) for k, v in node.items()}
        if isinstance(node, list | tuple):
            return [clean(v, depth + 1) for v in node]
        if isinstance(node, str):
            return clean_text(node)
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return node if -_INT64 <= node < _INT64 else str(node)
        if isinstance(node, float):
            return node if math.isfinite(node) else str(node)
        return clean_text(repr(node))

    # recursion stops at max_depth (deeper containers become the note), so it stays bounded
    return clean(value, 1)


def check_metadata(value: Any, what: str = "metadata") -> None:
    """Run metadata: an object within the JSON rule and :data:`MAX_METADATA_BYTES`."""
    if not isinstance(value, dict):
        raise LimitError(f"{what} must be a JSON object")
    check_json(value, what)
    size = len(orjson.dumps(value))
    if size > MAX_METADATA_BYTES:
        raise LimitError(
            f"{what} is {size} bytes of JSON; the limit is {MAX_METADATA_BYTES} bytes (256 KiB). "
            "Keep large data elsewhere (a stream, your database) and store a reference.",
            status=413,
        )


def check_duration(delta: timedelta, what: str) -> timedelta:
    if abs(delta) > MAX_DURATION:
        raise LimitError(f"{what} is longer than the limit of {MAX_DURATION.days} days")
    return delta
