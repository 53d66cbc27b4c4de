"""Calling user functions (run, hooks, middleware): by parameter name, or as Trigger.dev does.

A hook is called in one of two styles, chosen once from its signature:

* **by name** (the Python style) when every parameter is a name the runtime provides
  (``payload, ctx, task, init, signal`` and the hook's own ones: ``output``, ``error``,
  ``result``, ``wait``, ``next``, ``retry``, ``retry_at``, ``retry_delay_in_ms``,
  ``run_promise``): ``def on_success(output, ctx)`` gets ``output`` and ``ctx``; a hook with
  ``**kwargs`` gets everything available;
* **positionally, in Trigger.dev's order** otherwise: ``(payload, <subject>, params)`` where the
  subject is ``output`` (on_success), ``error`` (on_failure, catch_error / handle_error),
  ``result`` (on_complete) or ``wait`` (on_wait, on_resume), and hooks without a subject get
  ``(payload, params)``. ``params`` is a :class:`HookParams` holding everything (``params.ctx``
  or ``params["ctx"]``). A hook with a single parameter of another name gets ``params`` alone,
  as v4 calls hooks with one object: ``on_failure=lambda p: p.error``.

:func:`check_hook` refuses, when the task is declared, a hook that neither style can call (a
required parameter nothing provides), naming the hook and the fix; so a hook never fails only
when it finally fires. ``run`` is ``run(payload, ctx)`` or ``run(payload)`` (positional) with
other known names by keyword. Sync ``def`` and ``async def`` both work; a sync function runs on
the executor's main thread (one run per process, so blocking the loop blocks nothing else).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

#: names every hook can ask for
COMMON = frozenset({"payload", "ctx", "task", "init", "signal"})
#: the extra names each hook gets (``handle_error`` is Trigger.dev's old name of catch_error)
HOOK_NAMES: dict[str, frozenset[str]] = {
    "middleware": frozenset({"next"}),
    "init": frozenset(),
    "on_start": frozenset(),
    "on_start_attempt": frozenset(),
    "on_success": frozenset({"output"}),
    "on_failure": frozenset({"error"}),
    "on_complete": frozenset({"result"}),
    "cleanup": frozenset(),
    "catch_error": frozenset({"error", "retry", "retry_at", "retry_delay_in_ms"}),
    "handle_error": frozenset({"error", "retry", "retry_at", "retry_delay_in_ms"}),
    "on_wait": frozenset({"wait"}),
    "on_resume": frozenset({"wait"}),
    "on_cancel": frozenset({"run_promise"}),
}
KNOWN = COMMON.union(*HOOK_NAMES.values())
#: the second positional argument of Trigger.dev's positional hooks, by hook
SUBJECT = {"on_success": "output", "on_failure": "error", "on_complete": "result",
           "catch_error": "error", "handle_error": "error", "on_wait": "wait",
           "on_resume": "wait"}
#: the same, found from what the runtime passes (call_hook is not told the hook's name)
_SUBJECT_KEYS = ("output", "result", "error", "wait")


class HookParams(dict[str, Any]):
    """The object Trigger.dev passes to hooks, readable as ``params.ctx`` or ``params["ctx"]``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(
                f"hook params have no {name!r}; they have {sorted(self)}"
            ) from None


@dataclass(frozen=True)
class _Signature:
    names: tuple[str, ...]  # every named parameter, in order
    positional: int  # parameters that can be passed positionally
    required: tuple[str, ...]  # parameters without a default
    required_keyword_only: tuple[str, ...]
    var_kw: bool
    var_pos: bool

    @property
    def by_name(self) -> bool:
        if self.var_pos and not self.names and not self.var_kw:
            return False  # ``def hook(*args)``: Trigger.dev's order
        return all(n in KNOWN for n in self.names)


@lru_cache(maxsize=1024)
def _signature(fn: Callable[..., Any]) -> _Signature:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return _Signature((), 0, (), (), True, False)
    names: list[str] = []
    required: list[str] = []
    kw_only: list[str] = []
    positional = 0
    var_kw = var_pos = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind is p.VAR_POSITIONAL:
            var_pos = True
        else:
            names.append(p.name)
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                positional += 1
            if p.default is p.empty:
                (kw_only if p.kind is p.KEYWORD_ONLY else required).append(p.name)
    return _Signature(tuple(names), positional, tuple(required), tuple(kw_only), var_kw, var_pos)


def _params(fn: Callable[..., Any]) -> tuple[tuple[str, ...], bool, bool]:
    """(named parameters, accepts **kwargs, accepts *args)."""
    sig = _signature(fn)
    return (sig.names, sig.var_kw, sig.var_pos)


def check_hook(hook: str, fn: Callable[..., Any]) -> None:
    """Raise ``ValueError`` naming ``hook`` and the fix when neither style can call ``fn``."""
    sig = _signature(fn)
    available = COMMON | HOOK_NAMES.get(hook, frozenset())
    subject = SUBJECT.get(hook)
    shape = f"(payload, {subject}, params)" if subject else "(payload, params)"
    fix = (f"ask for values by name (any of {sorted(available)}), or take them positionally "
           f"in Trigger.dev's order {shape}, or take one params object")
    if sig.by_name:
        missing = [n for n in (*sig.required, *sig.required_keyword_only) if n not in available]
        if missing:
            raise ValueError(f"hook {hook} asks for {missing}, which {hook} does not get: {fix}")
        return
    if sig.required_keyword_only:
        raise ValueError(f"hook {hook} has keyword-only parameters "
                         f"{list(sig.required_keyword_only)} that nothing passes: {fix}")
    most = 3 if subject else 2
    if len(sig.required) > most:
        raise ValueError(f"hook {hook} needs {len(sig.required)} arguments; Trigger.dev passes "
                         f"at most {most} {shape}: {fix}")


def _positional(fn: Callable[..., Any], available: dict[str, Any]) -> list[Any]:
    sig = _signature(fn)
    params = HookParams(available)
    if sig.positional == 1 and not sig.var_pos:
        return [params]  # v4: one object
    subject = next((k for k in _SUBJECT_KEYS if k in available), None)
    order = [available.get("payload")]
    if subject is not None:
        order.append(available[subject])
    order.append(params)
    return order if sig.var_pos else order[: sig.positional]


def pick_kwargs(fn: Callable[..., Any], available: dict[str, Any]) -> dict[str, Any]:
    sig = _signature(fn)
    if sig.var_kw:
        return dict(available)
    return {n: available[n] for n in sig.names if n in available}


async def call_hook(fn: Callable[..., Any], available: dict[str, Any]) -> Any:
    if _signature(fn).by_name:
        result = fn(**pick_kwargs(fn, available))
    else:
        result = fn(*_positional(fn, available))
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
