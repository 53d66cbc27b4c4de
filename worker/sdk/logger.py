"""``logger``: structured, levelled logs from task code.

Inside a worker executor the runtime installs a sink that tags each record with the current run
and ships it to the API; elsewhere records go to the standard ``logging`` module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

LEVELS = {"debug": 10, "log": 20, "info": 20, "warn": 30, "error": 40}

Sink = Callable[[str, str, dict[str, Any]], None]

_std = logging.getLogger("worker.task")


def _default_sink(level: str, message: str, attributes: dict[str, Any]) -> None:
    _std.log(LEVELS[level], "%s %s", message, attributes if attributes else "")


_sink: Sink = _default_sink


def set_sink(sink: Sink | None) -> None:
    """Install the function that receives every record (``None`` restores the default)."""
    global _sink
    _sink = sink or _default_sink


class TaskLogger:
    def debug(self, message: str, **attributes: Any) -> None:
        _sink("debug", str(message), attributes)

    def log(self, message: str, **attributes: Any) -> None:
        _sink("log", str(message), attributes)

    def info(self, message: str, **attributes: Any) -> None:
        _sink("info", str(message), attributes)

    def warn(self, message: str, **attributes: Any) -> None:
        _sink("warn", str(message), attributes)

    def error(self, message: str, **attributes: Any) -> None:
        _sink("error", str(message), attributes)


logger = TaskLogger()
