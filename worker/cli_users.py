"""``trigger users create NAME``: a dashboard account with a hashed password, in the database
(``DATABASE_URL``). The password is read from ``--password-stdin`` or asked for, never taken as
an argument (it would land in the shell history)."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import TYPE_CHECKING

from worker.cli_settings import CliSettings

if TYPE_CHECKING:
    from worker.cli_settings import Formatter, SubParsers


def cmd_users_create(args: argparse.Namespace, settings: CliSettings) -> int:
    from worker.api.dashboard.access import check_new_user, create_user

    url = settings.require_database_url()
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            raise SystemExit("the passwords differ")
    try:
        check_new_user(args.username, password)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    create_user(url, args.username, password)
    print(f"dashboard user {args.username!r} saved (log in at <API URL>/dashboard)")
    return 0


def add_commands(sub: SubParsers, formatter: Formatter = argparse.HelpFormatter) -> None:
    users = sub.add_parser("users", help="dashboard accounts (DATABASE_URL)",
                           formatter_class=formatter)
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="COMMAND")
    create = users_sub.add_parser("create", help="create an account, or set its password",
                                  formatter_class=formatter)
    create.add_argument("username", help="the account's name")
    create.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of stdin")
    create.set_defaults(func=cmd_users_create)
