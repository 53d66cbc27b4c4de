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
import os
from collections.abc import Awaitable, Callable
from typing import Any

import httpx


def _api(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    url = os.environ.get("TRIGGER_API_URL", "http://127.0.0.1:3030").rstrip("/")
    key = os.environ.get("TRIGGER_SECRET_KEY")
    if not key:
        raise SystemExit("TRIGGER_SECRET_KEY is not set (or use --project/--env with "
                         "DATABASE_URL to manage keys in the database)")
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
    return res.json()


def _in_db(args: argparse.Namespace, work: Callable[[Any, str], Awaitable[Any]]) -> Any:
    """Run ``work(conn, environment id)`` in the database (DB mode), as the API presents it."""
    import psycopg
    from psycopg.rows import dict_row

    from worker.engine import keys
    from worker.engine.errors import EngineError
    from worker.engine.migrate import migrate

    url = os.environ.get("DATABASE_URL")
    if not url:
        raise SystemExit("--project/--env manage keys in the database: set DATABASE_URL")
    migrate(url)

    async def run() -> Any:
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


def _show(key: dict[str, Any]) -> str:
    used = key.get("lastUsedAt") or "never"
    return (f"{key['id']}  {key['prefix']}…  {key['type']:<6}  {key['status']:<8}  "
            f"{key['name']}  created {key['createdAt']}  last used {used}"
            + (f"  expires {key['expiresAt']}" if key.get("expiresAt") else ""))


def _as_api(created: Any) -> dict[str, Any]:
    from worker.api.routes_keys import present

    return {**present(created.key), "key": created.plaintext}


def cmd_list(args: argparse.Namespace) -> int:
    if _db_mode(args):
        from worker.api.routes_keys import present
        from worker.engine import keys

        found = _in_db(args, lambda conn, env: keys.list_keys(conn, env, args.all))
        rows = [present(k) for k in found]
    else:
        rows = _api("GET", "/api/v1/keys" + ("?includeRevoked=true" if args.all else ""))["data"]
    for row in rows:
        print(_show({k: str(v) if v is not None else None for k, v in row.items()}))
    if not rows:
        print("no keys")
    return 0


def cmd_create(args: argparse.Namespace) -> int:
    if _db_mode(args):
        from worker.engine import keys

        created = _in_db(args, lambda conn, env: keys.create_key(
            conn, env, args.name, args.type, given=args.key))
        out = _as_api(created)
    else:
        if args.key:
            raise SystemExit("--key registers a given key in the database: add --project/--env")
        out = _api("POST", "/api/v1/keys", {"name": args.name, "type": args.type})
    print(_show({k: str(v) if v is not None else None for k, v in out.items()}))
    if not args.key:  # a key the caller passed in is not echoed back: it may be headed for a log
        print(f"key (shown once, keep it now): {out['key']}")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if _db_mode(args):
        from worker.api.routes_keys import present
        from worker.engine import keys

        out = present(_in_db(args, lambda conn, env: keys.revoke_key(conn, env, args.id)))
    else:
        out = _api("DELETE", f"/api/v1/keys/{args.id}")
    print(f"revoked {out['id']} ({out['prefix']}…, {out['name']})")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    if _db_mode(args):
        from worker.api.routes_keys import _grace_seconds, present
        from worker.engine import keys

        grace = _grace_seconds(args.grace)
        rotated = _in_db(args, lambda conn, env: keys.rotate_key(conn, env, args.id, grace))
        out = {**_as_api(rotated.created), "previous": present(rotated.previous)}
    else:
        body = {"gracePeriod": args.grace} if args.grace is not None else {}
        out = _api("POST", f"/api/v1/keys/{args.id}/rotate", body)
    print(f"old key {out['previous']['id']} works until {out['previous']['expiresAt']}")
    print(f"new key {out['id']} (shown once, keep it now): {out['key']}")
    return 0


def cmd_rotate_signing_secret(args: argparse.Namespace) -> int:
    if _db_mode(args):
        from worker.engine import keys

        done = _in_db(args, keys.rotate_signing_secret)
        until = done.previous_valid_until
    else:
        until = _api("POST", "/api/v1/keys/signing-secret/rotate")["previousValidUntil"]
    print(f"signing secret rotated; tokens signed before stay valid until they expire "
          f"(at the latest {until})")
    return 0


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys and worker tokens (TRIGGER_SECRET_KEY, or "
                                       "--project/--env with DATABASE_URL)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)

    def command(name: str, func: Callable[[argparse.Namespace], int], help_: str
                ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = keys_sub.add_parser(name, help=help_)
        parser.add_argument("--project", default=None, help="project ref (database mode)")
        parser.add_argument("--env", default=None, choices=["dev", "staging", "prod"],
                            help="environment (database mode)")
        parser.set_defaults(func=func)
        return parser

    lst = command("list", cmd_list, "list keys: prefix, name, created, last used")
    lst.add_argument("--all", action="store_true", help="also revoked and expired keys")
    create = command("create", cmd_create, "create a key (printed once)")
    create.add_argument("--name", default="default")
    create.add_argument("--type", default="secret", choices=["secret", "worker"])
    create.add_argument("--key", default=None,
                        help="register this key instead of generating one (database mode)")
    revoke = command("revoke", cmd_revoke, "revoke a key now (every API replica within a second)")
    revoke.add_argument("id")
    rotate = command("rotate", cmd_rotate, "a new key; the old one works for a grace period")
    rotate.add_argument("id")
    rotate.add_argument("--grace", default=None, help="grace period, e.g. 1h (default 24h)")
    command("rotate-signing-secret", cmd_rotate_signing_secret,
            "new public-token signing secret (tokens signed before stay valid until expiry)")
