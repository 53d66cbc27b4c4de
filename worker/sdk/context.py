"""``ctx``: the run context handed to tasks and hooks.

Attribute access over the ``ctx`` dict of the dequeued run (see docs/protocol.md):
``ctx.run.id``, ``ctx.attempt.number``, ``ctx.task.id``, ``ctx.environment.slug``, ...
Nested dicts are wrapped on access; ``ctx.batch`` is ``None`` outside a batch. Item access
(``ctx["run"]["id"]``) and :meth:`Context.to_dict` give the raw data.

Inside an executor the current context is also available through :func:`current_context`
(used by ``wait``, ``metadata``, ``idempotency_keys``, ... to know which run they are in).
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from typing import Any


class AttrView(Mapping[str, Any]):
    """Read-only attribute view of a dict; nested dicts are views too."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_data", dict(data or {}))

    def __getattr__(self, name: str) -> Any:
        try:
            return _wrap(self._data[name])
        except KeyError:
            raise AttributeError(
                f"{type(self).__name__} has no field {name!r} (fields: {sorted(self._data)})"
            ) from None

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("ctx is read-only")

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: Any = None) -> Any:
        return _wrap(self._data.get(key, default))

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


class Context(AttrView):
    """The context of one attempt of one run."""

    __slots__ = ()


def _wrap(value: Any) -> Any:
    if isinstance(value, dict):
        return AttrView(value)
    return value


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "trigger_current_ctx", default=None
)


def current_context() -> Context | None:
    """The context of the run executing in this process, or None outside a run."""
    return _current.get()


def set_current_context(ctx: Context | None) -> contextvars.Token[Context | None]:
    return _current.set(ctx)


def reset_current_context(token: contextvars.Token[Context | None]) -> None:
    _current.reset(token)
