"""``trigger keys``: API keys and worker tokens of an environment.

Through the API with the environment's secret key (``TRIGGER_API_URL``, ``TRIGGER_SECRET_KEY``),
or, with ``--project REF --env SLUG``, straight in the database (``DATABASE_URL``): how an
operator bootstraps keys, e.g. registers the worker token a deployment keeps in a Secret
(``trigger keys create --type worker --key "$TRIGGER_WORKER_TOKEN" --project p --env prod``,
idempotent, so it survives restarts).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from worker.cli_settings import CliSettings

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow

    from worker.cli_settings import Formatter, SubParsers
    from worker.engine.keys import ApiKey

T = TypeVar("T")
#: a JSON object the API answered
Reply = Mapping[str, object]


def _api(settings: CliSettings, method: str, path: str,
         body: Mapping[str, object] | None = None) -> Reply:
    import httpx  # here: `trigger worker` builds this parser too, and needs no httpx

    url = settings.api_url.rstrip("/")
    key = settings.require_secret_key("manage keys through the API with it (or use "
                                      "--project/--env with DATABASE_URL)")
    try:
        res = httpx.request(method, url + path, json=body,
                            headers={"Authorization": f"Bearer {key}"}, timeout=30)
    except httpx.TransportError as exc:
        raise SystemExit(f"cannot reach the API at {url}: {exc}") from None
    if res.status_code >= 400:
        try:
            message = res.json().get("error", res.text)
        except ValueError:
            message = res.text
        raise SystemExit(f"{res.status_code}: {message}")
    reply: Reply = res.json()
    return reply


def _in_db(args: argparse.Namespace, settings: CliSettings,
           work: Callable[[AsyncConnection[DictRow], str], Awaitable[T]]) -> T:
    """Run ``work(conn, environment id)`` in the database (DB mode)."""
    import psycopg
    from psycopg.rows import dict_row

    from worker.engine import keys
    from worker.engine.errors import EngineError
    from worker.engine.migrate import migrate

    if not settings.database_url:
        raise SystemExit("--project/--env manage keys in the database: set DATABASE_URL")
    url = settings.database_url
    migrate(url)

    async def run() -> T:
        async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
            env_id = await keys.environment_id(conn, args.project, args.env)
            result = await work(conn, env_id)
            await conn.commit()
            return result

    try:
        return asyncio.run(run())
    except EngineError as exc:
        raise SystemExit(exc.message) from None


def _db_mode(args: argparse.Namespace) -> bool:
    if bool(args.project) != bool(args.env):
        raise SystemExit("--project and --env go together")
    return bool(args.project)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class KeyLine:
    """A key as this command prints it, from the API's answer or from the database."""

    id: str
    prefix: str
    type: str
    status: str
    name: str
    created_at: str
    last_used_at: str | None
    expires_at: str | None

    @classmethod
    def from_api(cls, key: Reply) -> KeyLine:
        return cls(str(key["id"]), str(key["prefix"]), str(key["type"]), str(key["status"]),
                   str(key["name"]), str(key["createdAt"]), _text(key.get("lastUsedAt")),
                   _text(key.get("expiresAt")))

    @classmethod
    def from_key(cls, key: ApiKey) -> KeyLine:
        return cls(key.id, key.prefix, key.kind, key.status, key.name, str(key.created_at),
                   _text(key.last_used_at), _text(key.expires_at))

    def show(self) -> str:
        return (f"{self.id}  {self.prefix}…  {self.type:<6}  {self.status:<8}  {self.name}  "
                f"created {self.created_at}  last used {self.last_used_at or 'never'}"
                + (f"  expires {self.expires_at}" if self.expires_at else ""))


def _object(reply: Reply, name: str) -> Reply:
    value = reply[name]
    assert isinstance(value, Mapping), f"the API's {name!r} is not an object"
    return value


def cmd_list(args: argparse.Namespace, settings: CliSettings) -> int:
    if _db_mode(args):
        from worker.engine import keys

        found = _in_db(args, settings, lambda conn, env: keys.list_keys(conn, env, args.all))
        lines = [KeyLine.from_key(k) for k in found]
    else:
        reply = _api(settings, "GET",
                     "/api/v1/keys" + ("?includeRevoked=true" if args.all else ""))
        data = reply["data"]
        assert isinstance(data, list)
        lines = [KeyLine.from_api(row) for row in data]
    for line in lines:
        print(line.show())
    if not lines:
        print("no keys")
    return 0


def cmd_create(args: argparse.Namespace, settings: CliSettings) -> int:
    if _db_mode(args):
        from worker.engine import keys

        created = _in_db(args, settings, lambda conn, env: keys.create_key(
            conn, env, args.name, args.type, given=args.key))
        line, plaintext = KeyLine.from_key(created.key), created.plaintext
    else:
        if args.key:
            raise SystemExit("--key registers a given key in the database: add --project/--env")
        reply = _api(settings, "POST", "/api/v1/keys", {"name": args.name, "type": args.type})
        line, plaintext = KeyLine.from_api(reply), str(reply["key"])
    print(line.show())
    if not args.key:  # a key the caller passed in is not echoed back: it may be headed for a log
        print(f"key (shown once, keep it now): {plaintext}")
    return 0


def cmd_revoke(args: argparse.Namespace, settings: CliSettings) -> int:
    if _db_mode(args):
        from worker.engine import keys

        line = KeyLine.from_key(
            _in_db(args, settings, lambda conn, env: keys.revoke_key(conn, env, args.id)))
    else:
        line = KeyLine.from_api(_api(settings, "DELETE", f"/api/v1/keys/{args.id}"))
    print(f"revoked {line.id} ({line.prefix}…, {line.name})")
    return 0


def cmd_rotate(args: argparse.Namespace, settings: CliSettings) -> int:
    if _db_mode(args):
        from worker.api.routes_keys import _grace_seconds
        from worker.engine import keys

        grace = _grace_seconds(args.grace)
        rotated = _in_db(args, settings,
                         lambda conn, env: keys.rotate_key(conn, env, args.id, grace))
        new, plaintext = KeyLine.from_key(rotated.created.key), rotated.created.plaintext
        previous = KeyLine.from_key(rotated.previous)
    else:
        body = {"gracePeriod": args.grace} if args.grace is not None else {}
        reply = _api(settings, "POST", f"/api/v1/keys/{args.id}/rotate", body)
        new, plaintext = KeyLine.from_api(reply), str(reply["key"])
        previous = KeyLine.from_api(_object(reply, "previous"))
    print(f"old key {previous.id} works until {previous.expires_at}")
    print(f"new key {new.id} (shown once, keep it now): {plaintext}")
    return 0


def cmd_rotate_signing_secret(args: argparse.Namespace, settings: CliSettings) -> int:
    if _db_mode(args):
        from worker.engine import keys

        until: object = _in_db(args, settings, keys.rotate_signing_secret).previous_valid_until
    else:
        until = _api(settings, "POST", "/api/v1/keys/signing-secret/rotate")["previousValidUntil"]
    print(f"signing secret rotated; tokens signed before stay valid until they expire "
          f"(at the latest {until})")
    return 0


def add_commands(sub: SubParsers, formatter: Formatter = argparse.HelpFormatter) -> None:
    help_keys = ("API keys and worker tokens (TRIGGER_SECRET_KEY, or --project/--env with "
                 "DATABASE_URL)")
    keys = sub.add_parser("keys", help=help_keys, description=help_keys,
                          formatter_class=formatter)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace, CliSettings], int], help_: str
                ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = keys_sub.add_parser(
            name, help=help_, description=help_, formatter_class=formatter)
        parser.add_argument("--project", default=None, help="project ref (database mode)")
        parser.add_argument("--env", default=None, choices=["dev", "staging", "prod"],
                            help="environment (database mode)")
        parser.set_defaults(func=func)
        return parser

    lst = command("list", cmd_list, "list keys: prefix, name, created, last used")
    lst.add_argument("--all", action="store_true", help="also revoked and expired keys")
    create = command("create", cmd_create, "create a key (printed once)")
    create.add_argument("--name", default="default", help="a name to tell keys apart")
    create.add_argument("--type", default="secret", choices=["secret", "worker"],
                        help="secret: the whole API; worker: the worker protocol only")
    create.add_argument("--key", default=None,
                        help="register this key instead of generating one (database mode)")
    revoke = command("revoke", cmd_revoke, "revoke a key now (every API replica within a second)")
    revoke.add_argument("id", help="the key's id (trigger keys list)")
    rotate = command("rotate", cmd_rotate, "a new key; the old one works for a grace period")
    rotate.add_argument("id", help="the key's id (trigger keys list)")
    rotate.add_argument("--grace", default=None, help="grace period, e.g. 1h (default 24h)")
    command("rotate-signing-secret", cmd_rotate_signing_secret,
            "new public-token signing secret (tokens signed before stay valid until expiry)")
