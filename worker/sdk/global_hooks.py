"""Global lifecycle hooks registered in code: Trigger.dev's ``tasks.onStart(fn)`` and friends.

``tasks.on_failure(fn)`` / ``tasks.on_failure("notify", fn)`` (a named hook replaces the one
registered under that name) from any task module or an ``init.py`` imported by one. They run for
every task, after the config file's hook of the same kind and before the task's own, in
registration order (``catch_error``: the task's first, then the config's, then these; the first
non-None answer wins). Signatures are checked as task hooks are (worker/sdk/hook_signatures.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from worker.sdk.definitions import TaskDefinitionError
from worker.sdk.hook_signatures import call_hook, check_hook
from worker.sdk.task import HOOK_NAMES

#: hook kind -> {registration name: function}, in registration order
_registry: dict[str, dict[str, Callable[..., object]]] = {}
#: bumped by every registration (the runtime caches the combined hooks until it changes)
_generation = 0


def generation() -> int:
    return _generation


def register(kind: str, name_or_fn: str | Callable[..., object],
             fn: Callable[..., object] | None = None) -> Callable[..., object]:
    if kind not in HOOK_NAMES:
        raise TaskDefinitionError(f"no global hook {kind!r}; one of {list(HOOK_NAMES)}")
    if isinstance(name_or_fn, str):
        name, hook = name_or_fn, fn
    else:
        name, hook = f"{getattr(name_or_fn, '__qualname__', 'hook')}@{id(name_or_fn)}", name_or_fn
    if not callable(hook):
        raise TaskDefinitionError(f"tasks.{kind} needs a function")
    try:
        check_hook(kind, hook)
    except ValueError as exc:
        raise TaskDefinitionError(f"global {exc}") from None
    global _generation
    _registry.setdefault(kind, {})[name] = hook
    _generation += 1
    return hook


def combined(kind: str, first: Callable[..., object] | None) -> Callable[..., object] | None:
    """``first`` (the config's hook) and the registered ones as one hook, or None."""
    hooks = [h for h in [first, *_registry.get(kind, {}).values()] if h is not None]
    if len(hooks) <= 1:
        return hooks[0] if hooks else None
    if kind == "middleware":
        async def chain(**available: Any) -> None:
            outer_next = available["next"]

            async def step(index: int) -> None:
                if index == len(hooks):
                    await outer_next()
                    return
                await call_hook(hooks[index], {**available, "next": lambda: step(index + 1)})

            await step(0)

        return chain

    async def all_of(**available: object) -> object:
        merged: dict[str, object] = {}
        for hook in hooks:
            result = await call_hook(hook, available)
            if kind == "catch_error" and result is not None:
                return result
            if kind == "init" and isinstance(result, dict):
                merged.update(result)
        return merged if kind == "init" else None

    return all_of
