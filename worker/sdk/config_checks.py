"""The checks of a project config's values that :mod:`worker.sdk.config` applies directly and
its pydantic models (:mod:`worker.sdk.config_models`) apply as validators: one wording."""

from __future__ import annotations

import re
from typing import Any

from worker.common.machines import MACHINE_PRESETS
from worker.sdk.definitions import TaskDefinitionError
from worker.sdk.task import normalize_retry


def retry_default(value: dict[str, Any] | None) -> dict[str, Any] | None:
    try:
        return normalize_retry(value, "retries.default")
    except TaskDefinitionError as exc:
        raise ValueError(str(exc)) from None


def debian_names(value: list[str]) -> list[str]:
    bad = [p for p in value if not re.fullmatch(r"[a-z0-9][a-z0-9+.\-]*(=[\w.+:~-]+)?", p)]
    if bad:
        raise ValueError(f"not Debian package names: {bad}")
    return value


def requirements(value: str | list[str]) -> str | list[str]:
    items = [value] if isinstance(value, str) else value
    bad = [p for p in items if not p or any(c in p for c in "\n\r\"'`$;&|")]
    if bad:
        raise ValueError(f"not pip requirement specifiers: {bad}")
    return value


def relative(value: list[str]) -> list[str]:
    bad = [f for f in value if not f or f.startswith("/") or ".." in f.split("/")]
    if bad:
        raise ValueError(f"build files must be paths inside the project: {bad}")
    return value


def instrumentors(value: list[Any]) -> list[Any]:
    bad = [type(i).__name__ for i in value if not callable(getattr(i, "instrument", None))]
    if bad:
        raise ValueError(f"not instrumentors (no instrument() method): {bad}")
    return value


def exporters(value: list[Any]) -> list[Any]:
    bad = [type(e).__name__ for e in value if not callable(getattr(e, "export", None))]
    if bad:
        raise ValueError(f"not exporters (no export() method): {bad}")
    return value


def known_machine(value: str) -> str:
    if value not in MACHINE_PRESETS:
        raise ValueError(f"unknown machine {value!r}; one of {sorted(MACHINE_PRESETS)}")
    return value
