"""Calling user functions (run, hooks, middleware) with arguments picked by parameter name.

A hook declares the arguments it wants: ``def on_success(output, ctx)`` gets ``output`` and
``ctx``; a hook with ``**kwargs`` gets everything available. ``run`` is ``run(payload, ctx)`` or
``run(payload)`` (positional, for compatibility with the decorator form). Sync ``def`` and
``async def`` both work; a sync function simply runs on the executor's main thread (one run per
process, so blocking the loop blocks nothing else).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1024)
def _params(fn: Callable[..., Any]) -> tuple[tuple[str, ...], bool, bool]:
    """(named parameters, accepts **kwargs, accepts *args)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ((), True, False)
    names: list[str] = []
    var_kw = var_pos = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.VAR_POSITIONAL:
            var_pos = True
        else:
            names.append(p.name)
    return (tuple(names), var_kw, var_pos)


def pick_kwargs(fn: Callable[..., Any], available: dict[str, Any]) -> dict[str, Any]:
    names, var_kw, _ = _params(fn)
    if var_kw:
        return dict(available)
    return {n: available[n] for n in names if n in available}


async def call_hook(fn: Callable[..., Any], available: dict[str, Any]) -> Any:
    result = fn(**pick_kwargs(fn, available))
    if inspect.isawaitable(result):
        result = await result
    return result


async def call_run(fn: Callable[..., Any], payload: Any, ctx: Any, extra: dict[str, Any]) -> Any:
    """``run(payload, ctx)`` / ``run(payload)`` positionally; other known names by keyword."""
    names, var_kw, var_pos = _params(fn)
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    positional = [payload, ctx]
    for i, name in enumerate(names):
        if i < 2 and name not in extra:
            args.append(positional[i])
        elif name in extra:
            kwargs[name] = extra[name]
    if var_pos and len(args) < 2:
        args = positional[: max(len(args), 2)]
    if var_kw:
        kwargs.update({k: v for k, v in extra.items() if k not in names})
    result = fn(*args, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result
