"""``trigger mcp`` and ``trigger retention set``: operations commands."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from worker.cli_settings import CliSettings

if TYPE_CHECKING:
    from worker.cli_settings import Formatter, SubParsers


def cmd_mcp(_: argparse.Namespace, settings: CliSettings) -> int:
    from worker.mcp_server import main

    key = settings.require_secret_key("the MCP server acts with the environment's secret key")
    return main(settings.api_url, key)


def cmd_retention_set(args: argparse.Namespace, settings: CliSettings) -> int:
    import psycopg
    from psycopg.rows import dict_row

    from worker.engine import keys
    from worker.engine.errors import EngineError
    from worker.engine.migrate import migrate
    from worker.engine.queries import Q

    url = settings.require_database_url()
    if args.days < 0:
        raise SystemExit("--days must be 0 (the server's TRIGGER_RETENTION_DAYS) or more")
    migrate(url)

    async def run() -> None:
        async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
            env_id = await keys.environment_id(conn, args.project, args.env)
            await conn.execute(Q.set_retention_days,
                               {"environment_id": env_id, "days": args.days or None})
            await conn.commit()

    try:
        asyncio.run(run())
    except EngineError as exc:
        raise SystemExit(exc.message) from None
    kept = f"{args.days} days" if args.days else "TRIGGER_RETENTION_DAYS (server default)"
    print(f"{args.project}/{args.env}: finished runs are kept {kept}")
    return 0


def add_commands(sub: SubParsers, formatter: Formatter = argparse.HelpFormatter) -> None:
    def parser(parent: SubParsers, name: str, help_: str) -> argparse.ArgumentParser:
        made: argparse.ArgumentParser = parent.add_parser(
            name, help=help_, description=help_, formatter_class=formatter)
        return made

    mcp = parser(sub, "mcp", "Model Context Protocol server over stdio (TRIGGER_API_URL, "
                             "TRIGGER_SECRET_KEY)")
    mcp.set_defaults(func=cmd_mcp)
    retention = parser(sub, "retention", "how long finished runs are kept")
    retention_sub = retention.add_subparsers(dest="retention_command", required=True)
    set_ = parser(retention_sub, "set", "per-environment retention (DATABASE_URL)")
    set_.add_argument("--project", required=True, help="project ref")
    set_.add_argument("--env", required=True, choices=["dev", "staging", "prod"],
                      help="environment")
    set_.add_argument("--days", type=int, required=True, help="0: back to the server default")
    set_.set_defaults(func=cmd_retention_set)
