"""``idempotency_keys``: keys that make a trigger (or a wait) happen once
(docs/triggerdev-semantics.md, "Idempotency keys").

``create(key, scope=...)`` hashes the key parts with the scope's parts, SHA-256, hex:
``run`` (default) adds the current run's id, ``attempt`` the run id and attempt number,
``global`` nothing. Outside a run every scope is global. A raw string passed as
``idempotency_key`` inside a run is treated as run-scoped (Trigger.dev ≥ 4.3.1).
"""

from __future__ import annotations

import hashlib
from collections.abc import Generator
from typing import Any, Literal

from worker.sdk import transport
from worker.sdk.context import current_context
from worker.sdk.transport import path_segment

Scope = Literal["run", "attempt", "global"]


class IdempotencyKey(str):
    """A key made by :func:`create`: used exactly as it is.

    Awaitable (to itself), so Trigger.dev's ``await idempotencyKeys.create(...)`` translates
    literally: ``key = await idempotency_keys.create("k")``; the plain call works as well.
    """

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, IdempotencyKey]:
        return self
        yield  # unreachable: makes this a generator, so ``await key`` is ``key``


def _scope_parts(scope: Scope) -> list[str]:
    ctx = current_context()
    if ctx is None or scope == "global":
        return []
    if scope == "run":
        return [ctx.run.id]
    if scope == "attempt":
        return [ctx.run.id, str(ctx.attempt.number)]
    raise ValueError(f"scope must be 'run', 'attempt' or 'global', not {scope!r}")


def create(key: str | list[str], scope: Scope = "run") -> IdempotencyKey:
    parts = [key] if isinstance(key, str) else [str(k) for k in key]
    if not parts or not all(parts):
        raise ValueError("an idempotency key needs at least one non-empty part")
    joined = "-".join([*parts, *_scope_parts(scope)])
    return IdempotencyKey(hashlib.sha256(joined.encode()).hexdigest())


def for_trigger(key: str) -> str:
    """The key a trigger sends: made keys as they are; a raw string scoped to the current run
    inside a run, and as it is outside one (so plain HTTP callers see the same key)."""
    if isinstance(key, IdempotencyKey) or current_context() is None:
        return key
    return create(key, "run")


async def reset(task_id: str, key: str) -> list[str]:
    """Forget ``key`` for ``task_id`` so the next trigger with it runs again. Returns the
    ids of the runs that held it."""
    data = await transport.json(
        "POST",
        f"/api/v1/idempotencyKeys/{path_segment(key)}/reset",
        json={"taskIdentifier": task_id},
    )
    return [str(run) for run in data.get("runs", [])]
