"""The ``trigger`` command's settings: read once from the environment, then its flags win.

:func:`worker.cli.main` builds one :class:`CliSettings` before running a command and passes it
on; nothing else in the CLI reads the environment. A set but unusable value stops the command
with one line naming the variable (:class:`~worker.common.settings.SettingsError`). Every
variable is in the README's "Configuration" table.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from worker.common.settings import env_bool, env_choice, env_float, env_int, env_str

if TYPE_CHECKING:
    #: what ``add_subparsers()`` returns: each ``cli_*`` module adds its commands to it
    SubParsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
    Formatter: TypeAlias = type[argparse.HelpFormatter]

#: where the CLI, ``trigger worker`` and ``trigger mcp`` find the API unless told
DEFAULT_API_URL = "http://127.0.0.1:3030"
DEFAULT_PORT = 3030
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class CliSettings:
    """What the commands take from the environment; a field named like a flag's ``dest`` is
    overridden by that flag (:meth:`with_flags`)."""

    api_url: str = DEFAULT_API_URL
    secret_key: str | None = None
    #: the worker protocol's credential (``trigger worker``; else the secret key)
    worker_token: str | None = None
    database_url: str | None = None
    tasks_database_url: str | None = None
    #: ``trigger dev``'s API port (``--port``)
    dev_port: int = DEFAULT_PORT
    #: ``trigger api``'s port (``--port``)
    api_port: int = DEFAULT_PORT
    api_wait: float = 60.0
    log_format: str = "text"
    #: a line per run even when stdout is not a terminal
    verbose: bool = False
    config_dir: Path | None = None
    dev_secret_key: str | None = None
    prod_secret_key: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CliSettings:
        config_dir = env_str("TRIGGER_CONFIG_DIR", environ=environ)
        return cls(
            api_url=env_str("TRIGGER_API_URL", DEFAULT_API_URL, environ=environ)
            or DEFAULT_API_URL,
            secret_key=env_str("TRIGGER_SECRET_KEY", environ=environ),
            worker_token=env_str("TRIGGER_WORKER_TOKEN", environ=environ),
            database_url=env_str("DATABASE_URL", environ=environ),
            tasks_database_url=env_str("TASKS_DATABASE_URL", environ=environ),
            dev_port=env_int("TRIGGER_PORT", DEFAULT_PORT, minimum=0, environ=environ),
            api_port=env_int("PORT", DEFAULT_PORT, minimum=0, environ=environ),
            api_wait=env_float("TRIGGER_API_WAIT", 60.0, minimum=0, environ=environ),
            log_format=env_choice("TRIGGER_LOG_FORMAT", "text", LOG_FORMATS, environ=environ),
            verbose=env_bool("TRIGGER_VERBOSE", False, environ=environ),
            config_dir=Path(config_dir) if config_dir else None,
            dev_secret_key=env_str("TRIGGER_DEV_SECRET_KEY", environ=environ),
            prod_secret_key=env_str("TRIGGER_PROD_SECRET_KEY", environ=environ),
        )

    def with_flags(self, args: argparse.Namespace) -> CliSettings:
        """These settings with every flag the command line gave (not None) in place."""
        given = {f.name: value for f in fields(self)
                 if (value := getattr(args, f.name, None)) is not None}
        return replace(self, **given)

    def require_database_url(self) -> str:
        if not self.database_url:
            raise SystemExit("DATABASE_URL is not set: point it at the engine's Postgres")
        return self.database_url

    def require_secret_key(self, why: str) -> str:
        if not self.secret_key:
            raise SystemExit(f"TRIGGER_SECRET_KEY is not set: {why}")
        return self.secret_key

    def profiles_dir(self) -> Path:
        """Where ``trigger login`` keeps its profiles."""
        return self.config_dir or Path.home() / ".config" / "trigger-worker"
