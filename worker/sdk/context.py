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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio


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

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("ctx is read-only")

    def __getitem__(self, key: str) -> Any:
        return _wrap(self._data[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, default: object = None) -> Any:
        return _wrap(self._data.get(key, default))

    def to_dict(self) -> dict[str, Any]:
        return dict(self._data)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"


class Context(AttrView):
    """The context of one attempt of one run."""

    __slots__ = ()


def _wrap(value: object) -> Any:
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


# --- abort signal ----------------------------------------------------------------------------


class AbortSignal:
    """Tells task code that its attempt is being stopped (run canceled, or ``max_duration``).

    Hooks and ``run`` receive it when they declare a parameter named ``signal``:
    ``if signal.aborted: ...`` or ``await signal.wait()``. ``reason`` is ``"canceled"`` or
    ``"max_duration"``.
    """

    def __init__(self) -> None:
        self.aborted = False
        self.reason: str | None = None
        self._waiters: list[asyncio.Future[str | None]] = []

    def mark(self, reason: str) -> None:
        """Set the flag only (safe inside a signal handler); :meth:`wake` resolves waiters."""
        if not self.aborted:
            self.aborted, self.reason = True, reason

    def wake(self) -> None:
        for fut in self._waiters:
            if not fut.done():
                fut.set_result(self.reason)
        self._waiters.clear()

    def abort(self, reason: str) -> None:
        self.mark(reason)
        self.wake()

    async def wait(self) -> str:
        """Return once the attempt is aborted (at once if it already is)."""
        import asyncio  # lazy: ``import worker`` imports this module and must not load asyncio

        if self.aborted:
            return str(self.reason)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        return str(await fut)


# --- per-run locals (docs/triggerdev-semantics.md, "Locals") ---


class LocalKey:
    """A key made by :meth:`Locals.create`; values live for one attempt of one run."""

    __slots__ = ("id",)

    def __init__(self, id: str) -> None:
        self.id = id

    def __repr__(self) -> str:
        return f"LocalKey({self.id!r})"


_locals: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "trigger_run_locals", default=None
)


class Locals:
    """Storage shared by middleware, hooks and ``run`` of one attempt (``locals`` in the SDK).

    ``db = locals.create("db")`` at module level; ``locals.set(db, conn)`` in a middleware;
    ``locals.get(db)`` / ``locals.get_or_throw(db)`` in ``run``. Each attempt starts empty, so
    nothing leaks from one run to the next in a reused executor.
    """

    def create(self, id: str) -> LocalKey:
        return LocalKey(id)

    def _store(self) -> dict[str, object]:
        store = _locals.get()
        if store is None:
            # Outside a run (a script, a plain unit test): one store for this context.
            store = {}
            _locals.set(store)
        return store

    def get(self, key: LocalKey, default: object = None) -> Any:
        return self._store().get(key.id, default)

    def get_or_throw(self, key: LocalKey) -> Any:
        store = self._store()
        if key.id not in store:
            raise KeyError(f"local {key.id!r} was not set in this run")
        return store[key.id]

    def set(self, key: LocalKey, value: object) -> Any:
        self._store()[key.id] = value
        return value


locals = Locals()  # the SDK name (Trigger.dev `locals`); shadows the builtin here only


def begin_run_locals() -> contextvars.Token[dict[str, object] | None]:
    """Give the attempt that starts now an empty ``locals`` store (runtime use)."""
    return _locals.set({})


def end_run_locals(token: contextvars.Token[dict[str, object] | None]) -> None:
    _locals.reset(token)
