"""Reading configuration from the environment: the one way every process does it.

Each process builds its settings object once, at start, from these readers (the API's
``worker.api.settings.Settings``, the worker's ``worker.runtime.settings.WorkerSettings``, the
SDK's client configuration). A value that is set but unusable raises :class:`SettingsError`
naming the variable and what it should be; an unset or empty variable gives the default. Every
variable read here is listed in the README's "Configuration" table
(``tests/test_architecture.py`` checks that).
"""

from __future__ import annotations

import os
from collections.abc import Mapping


class SettingsError(ValueError):
    """A configuration variable is set to something unusable; the message names it."""


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or None


def env_str(name: str, default: str | None = None, *,
            environ: Mapping[str, str] | None = None) -> str | None:
    """The variable's text, or ``default`` when unset or empty."""
    value = _raw(name, environ)
    return default if value is None else value


def env_int(name: str, default: int, *, minimum: int | None = None,
            environ: Mapping[str, str] | None = None) -> int:
    """A whole number, at least ``minimum`` when given."""
    raw = _raw(name, environ)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None,
              environ: Mapping[str, str] | None = None) -> float:
    """A finite number (seconds, milliseconds, … as the variable's name says)."""
    raw = _raw(name, environ)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise SettingsError(f"{name} must be a finite number, got {raw!r}")
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {value:g}")
    return value


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def env_bool(name: str, default: bool, *, environ: Mapping[str, str] | None = None) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    raw = _raw(name, environ)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise SettingsError(f"{name} must be one of 1/true/yes/on or 0/false/no/off, got {raw!r}")


def env_choice(name: str, default: str, choices: tuple[str, ...], *,
               environ: Mapping[str, str] | None = None) -> str:
    """One of ``choices`` (compared in lower case)."""
    raw = _raw(name, environ)
    if raw is None:
        return default
    if raw.lower() not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.lower()
