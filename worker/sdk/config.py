"""``define_config``: the project configuration read from ``trigger_config.py``.

Validated as pydantic validates a model, so that a bad key fails with a message naming it; but
pydantic is only imported when a value is not already of its field's type: the usual
``trigger_config.py`` (strings, numbers, lists, dicts of them, functions) is checked here
directly. Importing pydantic's model machinery, scanning the installed distributions for its
plugins and building these four models cost ~60 ms of CPU in every zygote, on the cold start's
path (docs/cold-start.md). Anything else (a value to coerce, e.g. ``"60"``, a bad value, an
unknown key) goes through the pydantic models, which give the values and messages they always
gave.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, cast

from worker.sdk.config_checks import (
    debian_names,
    exporters,
    instrumentors,
    known_machine,
    relative,
    requirements,
    retry_default,
)
from worker.sdk.definitions import TaskDefinitionError
from worker.sdk.global_hooks import combined
from worker.sdk.task import HOOK_NAMES, normalize_hooks


class ConfigError(ValueError):
    """``trigger_config.py`` is invalid; the message names the key and what to fix."""


GLOBAL_HOOKS = (
    "init",
    "on_start",
    "on_start_attempt",
    "on_success",
    "on_failure",
    "on_complete",
    "cleanup",
    "catch_error",
    "middleware",
    "on_cancel",
)
LOG_LEVELS = ("debug", "info", "log", "warn", "error", "none")

#: Trigger.dev's config keys spelled differently here (its literal twin → our key)
CONFIG_TWINS = {"default_machine": "machine"}


# --- the direct path: values already of their field's type ----------------------------------

class _Slow(Exception):
    """A value this path does not take as it is: the pydantic models decide."""


def _str(v: Any) -> str:
    if type(v) is not str:
        raise _Slow
    return v


def _strs(v: Any) -> list[str]:
    if type(v) is not list or any(type(x) is not str for x in v):
        raise _Slow
    return list(v)


def _int(v: Any, low: int | None = None, high: int | None = None) -> int:
    if type(v) is not int or (low is not None and v < low) or (high is not None and v > high):
        raise _Slow
    return v


def _objects(v: Any) -> list[Any]:
    if type(v) is not list:
        raise _Slow
    return list(v)


def _checked(check: Callable[[Any], Any], value: Any) -> Any:
    try:
        return check(value)
    except ValueError:
        raise _Slow from None


def _bool(v: Any) -> bool:
    if type(v) is not bool:
        raise _Slow
    return v


def _max_duration(v: Any) -> float:
    if type(v) not in (int, float) or not v >= 5:
        raise _Slow
    return float(v)


def _ttl(v: Any) -> str | int | None:
    if v is None or type(v) in (str, int):
        return cast("str | int | None", v)
    raise _Slow


def _resource(v: Any) -> dict[str, Any]:
    if type(v) is not dict or any(type(k) is not str for k in v):
        raise _Slow
    return dict(v)


def _hook(v: Any) -> Callable[..., object] | None:
    if v is not None and not callable(v):
        raise _Slow
    return cast("Callable[..., object] | None", v)


class _Section:
    """A validated group of settings: attributes, ``repr`` and ``==`` as a model's."""

    #: field → (default, direct check: the value as the model would keep it, or _Slow)
    _fields: ClassVar[dict[str, tuple[Callable[[], Any], Callable[[Any], Any]]]] = {}

    def __init__(self, **values: Any) -> None:
        try:
            fields = self._direct(values)
        except _Slow:
            fields = _by_pydantic(type(self), values)
        self.__dict__.update(fields)

    @classmethod
    def _direct(cls, values: dict[str, Any]) -> dict[str, Any]:
        if any(name not in cls._fields for name in values):
            raise _Slow  # an unknown key: pydantic names it
        return {name: check(values[name]) if name in values else default()
                for name, (default, check) in cls._fields.items()}

    @classmethod
    def _made(cls, fields: dict[str, Any]) -> Any:
        made = cls.__new__(cls)
        made.__dict__.update(fields)
        return made

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({shown})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(self) == vars(other)

    __hash__ = None  # type: ignore[assignment]


def _section(cls: type[_Section]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if isinstance(v, cls):
            return v  # as pydantic keeps a model instance given
        if type(v) is not dict:
            raise _Slow
        return cls._made(cls._direct(v))
    return check


class RetriesConfig(_Section):
    enabled_in_dev: bool
    default: dict[str, Any] | None
    _fields = {"enabled_in_dev": (lambda: True, _bool),
               "default": (lambda: None, lambda v: _checked(retry_default, v))}


class BuildConfig(_Section):
    """``build``: what ``trigger deploy`` puts in the worker image (the Python answer to
    Trigger.dev's ``aptGet`` / ``ffmpeg`` / ``additionalFiles`` / ``additionalPackages``
    extensions). See worker/dockerfile.py."""

    #: Debian packages (``apt-get install``), e.g. ``["ffmpeg", "libpq5"]``
    system_packages: list[str]
    #: pip requirement specifiers, e.g. ``["httpx>=0.27", "pandas==2.2.2"]``
    pip_packages: list[str]
    #: files or folders (relative to the project) copied beside the task dirs
    files: list[str]
    #: the base image
    base_image: str
    #: how the image gets trigger-worker itself (a pip requirement)
    worker_requirement: str
    _fields = {"system_packages": (list, lambda v: _checked(debian_names, _strs(v))),
               "pip_packages": (list, lambda v: _checked(requirements, _strs(v))),
               "files": (list, lambda v: _checked(relative, _strs(v))),
               "base_image": (lambda: "python:3.11-slim", _str),
               "worker_requirement": (lambda: "trigger-worker",
                                      lambda v: _checked(requirements, _str(v)))}


class TelemetryConfig(_Section):
    """``telemetry``: the snake_case twin of Trigger.dev's config key (docs/api.md, "Traces").

    Set up in each executor after the fork (worker/runtime/telemetry.py), never in the zygote.
    """

    #: instrumentor objects (``HTTPXClientInstrumentor()``, ``PsycopgInstrumentor()``, ...):
    #: their ``instrument()`` is called in each executor
    instrumentations: list[Any]
    #: extra span exporters (get the same spans as the API)
    exporters: list[Any]
    #: log record exporters (``logger.*`` and ``print`` as OpenTelemetry log records)
    log_exporters: list[Any]
    #: extra resource attributes of every span
    resource: dict[str, Any]
    #: False turns tracing off (so does ``TRIGGER_TELEMETRY=off`` in the worker's environment)
    enabled: bool
    _fields = {"instrumentations": (list, lambda v: _checked(instrumentors, _objects(v))),
               "exporters": (list, lambda v: _checked(exporters, _objects(v))),
               "log_exporters": (list, lambda v: _checked(exporters, _objects(v))),
               "resource": (dict, _resource),
               "enabled": (lambda: True, _bool)}


class Config(_Section):
    """The validated project configuration."""

    project: str
    dirs: list[str]
    max_duration: float
    retries: RetriesConfig
    machine: str
    log_level: str
    ttl: str | int | None
    #: runs at once per worker replica (one executor each)
    concurrency: int
    max_runs_per_process: int
    #: MiB of RSS
    max_memory_per_process: int | None
    build: BuildConfig
    telemetry: TelemetryConfig
    init: Callable[..., object] | None
    on_start: Callable[..., object] | None
    on_start_attempt: Callable[..., object] | None
    on_success: Callable[..., object] | None
    on_failure: Callable[..., object] | None
    on_complete: Callable[..., object] | None
    cleanup: Callable[..., object] | None
    catch_error: Callable[..., object] | None
    middleware: Callable[..., object] | None
    on_cancel: Callable[..., object] | None
    _fields = {
        "project": (lambda: _str(None), lambda v: _str(v) if v else _str(None)),  # required
        "dirs": (lambda: ["trigger"], _strs),
        "max_duration": (lambda: 3600, _max_duration),
        "retries": (RetriesConfig, _section(RetriesConfig)),
        "machine": (lambda: "small-1x", lambda v: _checked(known_machine, _str(v))),
        "log_level": (lambda: "info", lambda v: v if _str(v) in LOG_LEVELS else _str(None)),
        "ttl": (lambda: None, _ttl),
        "concurrency": (lambda: 10, lambda v: _int(v, 1, 1000)),
        "max_runs_per_process": (lambda: 1000, lambda v: _int(v, 1)),
        "max_memory_per_process": (lambda: None, lambda v: v if v is None else _int(v)),
        "build": (BuildConfig, _section(BuildConfig)),
        "telemetry": (TelemetryConfig, _section(TelemetryConfig)),
        **{name: (lambda: None, _hook) for name in GLOBAL_HOOKS},
    }

    def global_hooks(self) -> dict[str, Callable[..., object]]:
        """The config's hooks, each combined with those registered with ``tasks.on_*``
        (worker/sdk/global_hooks.py)."""
        found = {n: combined(n, getattr(self, n, None)) for n in HOOK_NAMES}
        return {n: h for n, h in found.items() if h is not None}



def define_config(**options: Any) -> Config:
    """Validate the project's options; raise :class:`ConfigError` naming every bad key.

    Trigger.dev's literal spellings are accepted too: ``default_machine`` (= ``machine``) and
    the hook ``handle_error`` (= ``catch_error``). Hooks are checked as task hooks are
    (worker/sdk/hook_signatures.py): one that cannot be called is refused here.
    """
    for twin, key in CONFIG_TWINS.items():
        if twin in options:
            if key in options:
                raise ConfigError(f"invalid trigger config: give {key} or {twin}, not both")
            options[key] = options.pop(twin)
    hook_options = {k: options.pop(k) for k in list(options)
                    if k in GLOBAL_HOOKS or k == "handle_error"}
    try:
        options.update(normalize_hooks(hook_options, "trigger config"))
    except TaskDefinitionError as exc:
        raise ConfigError(f"invalid trigger config: {exc}") from None
    return Config(**options)


# --- the pydantic path ----------------------------------------------------------------------

def _by_pydantic(kind: type[_Section], values: dict[str, Any]) -> dict[str, Any]:
    """``values`` validated by the pydantic model of ``kind``: the fields of the plain object,
    or :class:`ConfigError` with pydantic's messages."""
    from pydantic import ValidationError

    plain = {k: vars(v) if isinstance(v, _Section) else v for k, v in values.items()}
    try:
        model = _models()[kind](**plain)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<config>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid trigger config: {problems}") from None
    return _plain_fields(model)


def _plain_fields(model: Any) -> dict[str, Any]:
    sections = {model: kind for kind, model in _models().items()}
    fields = {}
    for key in type(model).model_fields:
        value = getattr(model, key)
        kind = sections.get(type(value))
        fields[key] = kind._made(_plain_fields(value)) if kind is not None else value
    return fields


def _models() -> dict[type[_Section], Any]:
    """The pydantic models the direct path stands in for (built on first use)."""
    from worker.sdk.config_models import MODELS

    return {kind: MODELS[kind.__name__]
            for kind in (Config, RetriesConfig, BuildConfig, TelemetryConfig)}
