"""Environment variables of an environment: stored encrypted (worker/engine/secret_box.py),
managed through Trigger.dev's ``/api/v1/projects/{ref}/envvars/{env}`` paths, and handed with
each leased run to the executor, which sets them for that run only (docs/api.md).

What runs get is cached per process (:class:`RunVarCache`): every lease hands the variables
out, and reading and decrypting them each time cost a round trip per dequeue. Every write here
notifies channel ``trigger_env_vars`` in its own transaction, so each API process drops the
environment's entry as soon as the change commits; while the listening connection is down the
cache is not used at all (as the key cache, worker/api/auth.py)."""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from worker.engine import secret_box
from worker.engine.db import Pool, fetch_all, fetch_one
from worker.engine.errors import Conflict, EngineError, Kind, NotFound
from worker.engine.keys import Environment
from worker.engine.notifier import Listener
from worker.engine.queries import Q

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,255}$")
MAX_VALUE_BYTES = 64 * 1024
MAX_VARIABLES = 500
#: the channel of changes (payload: the environment id)
CHANNEL = "trigger_env_vars"
#: a bound on staleness should a notification ever be lost with the connection still up
CACHE_SECONDS = 30.0


class EncryptionNotConfigured(EngineError):
    kind = Kind.not_configured


@dataclass(frozen=True)
class EnvVar:
    name: str
    value: str
    is_secret: bool


def _context(env: Environment, name: str) -> bytes:
    return f"env-var:{env.id}:{name}".encode()


def _seal(env: Environment, name: str, value: str) -> bytes:
    if not _NAME.match(name):
        raise EngineError(
            f"variable name {name!r} must be letters, digits and underscores, not starting "
            "with a digit (at most 256 characters)"
        )
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise EngineError(f"the value of {name} is over {MAX_VALUE_BYTES} bytes")
    try:
        return secret_box.seal(value, _context(env, name))
    except secret_box.EncryptionUnavailable as exc:
        raise EncryptionNotConfigured(str(exc)) from None


def _missing(env: Environment, name: str) -> NotFound:
    return NotFound(f"environment variable {name!r} is not set in the {env.slug} environment")


async def list_vars(pool: Pool, env: Environment) -> list[EnvVar]:
    async with pool.connection() as conn:
        rows = await fetch_all(conn, Q.list_env_vars, {"environment_id": env.id})
    if rows and not secret_box.available():
        raise EncryptionNotConfigured("environment variables need TRIGGER_ENCRYPTION_KEY")
    out = []
    for row in rows:
        try:
            sealed = bytes(row["value_ciphertext"])
            value = secret_box.open_sealed(sealed, _context(env, row["name"]))
        except Exception:  # InvalidTag: sealed under another key
            raise EncryptionNotConfigured(
                f"environment variable {row['name']} was encrypted with another "
                "TRIGGER_ENCRYPTION_KEY; set the key it was written with, or set the variable "
                "again"
            ) from None
        out.append(EnvVar(row["name"], value, row["is_secret"]))
    return out


async def get(pool: Pool, env: Environment, name: str) -> EnvVar:
    for var in await list_vars(pool, env):
        if var.name == name:
            return var
    raise _missing(env, name)


async def put_many(
    pool: Pool, env: Environment, values: dict[str, str], *, secret: bool, overwrite: bool
) -> None:
    """Create (or, with ``overwrite``, replace) variables, all or none."""
    sealed = {name: _seal(env, name, value) for name, value in values.items()}
    async with pool.connection() as conn, conn.transaction():
        for name, value in sealed.items():
            await conn.execute(
                Q.upsert_env_var,
                {
                    "environment_id": env.id,
                    "name": name,
                    "value": value,
                    "is_secret": secret,
                    "overwrite": overwrite,
                },
            )
        count = await fetch_all(conn, Q.list_env_vars, {"environment_id": env.id})
        if len(count) > MAX_VARIABLES:
            raise EngineError(f"at most {MAX_VARIABLES} variables per environment")
        await conn.execute(Q.notify_env_vars, {"environment_id": env.id})


async def create(pool: Pool, env: Environment, name: str, value: str, secret: bool) -> None:
    existing = {v.name for v in await list_vars(pool, env)}
    if name in existing:
        raise Conflict(f"{name} is already set in the {env.slug} environment; update it instead")
    await put_many(pool, env, {name: value}, secret=secret, overwrite=False)


async def update(pool: Pool, env: Environment, name: str, value: str) -> None:
    sealed = _seal(env, name, value)
    async with pool.connection() as conn:
        params = {"environment_id": env.id, "name": name, "value": sealed}
        if await fetch_one(conn, Q.update_env_var, params) is None:
            raise _missing(env, name)
        await conn.execute(Q.notify_env_vars, {"environment_id": env.id})


async def delete(pool: Pool, env: Environment, name: str) -> None:
    async with pool.connection() as conn:
        params = {"environment_id": env.id, "name": name}
        if await fetch_one(conn, Q.delete_env_var, params) is None:
            raise _missing(env, name)
        await conn.execute(Q.notify_env_vars, {"environment_id": env.id})


async def for_runs(pool: Pool, env: Environment) -> dict[str, str]:
    """What executors set for the environment's runs. Variables that cannot be decrypted are
    reported in the API's log and left out: runs go on rather than every dequeue failing."""
    try:
        return {v.name: v.value for v in await list_vars(pool, env)}
    except EncryptionNotConfigured as exc:
        log.warning("runs of %s get no environment variables: %s", env.slug, exc.message)
        return {}


class RunVarCache:
    """:func:`for_runs` per environment, for this process; entries dropped on the
    ``trigger_env_vars`` notifications (:meth:`listener`, given to the engine's notifier)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, dict[str, str]]] = {}
        #: bumped by every drop: a read that raced a change is not cached
        self._generation = 0
        self.listening = False

    def listener(self) -> Listener:
        return Listener(on_note=self.drop, on_up=self._up, on_down=self._down)

    async def for_runs(self, pool: Pool, env: Environment) -> dict[str, str]:
        if self.listening:
            hit = self._entries.get(env.id)
            if hit is not None and hit[0] > time.monotonic():
                return hit[1]
        generation = self._generation
        variables = await for_runs(pool, env)
        if self.listening and generation == self._generation:
            self._entries[env.id] = (time.monotonic() + CACHE_SECONDS, variables)
        return variables

    def drop(self, environment_id: str) -> None:
        self._generation += 1
        self._entries.pop(environment_id, None)

    def _up(self) -> None:  # changes may have been missed while not listening
        self._generation += 1
        self._entries.clear()
        self.listening = True

    def _down(self) -> None:
        self._generation += 1
        self.listening = False
