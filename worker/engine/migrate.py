"""Numbered SQL migrations (``sql/migrations/NNNN_name.sql``), applied once each, in order.

Safe to run from several processes at once: a transaction-level advisory lock serialises them.
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from worker.engine.queries import SQL_DIR

MIGRATIONS_DIR = SQL_DIR / "migrations"
_LOCK_ID = 0x7472_6967  # "trig"


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9][0-9][0-9]_*.sql"))


def migrate(url: str) -> list[str]:
    """Apply the migrations not applied yet; return the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_ID,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row[0] for row in conn.execute("SELECT name FROM schema_migrations")}
        for path in migration_files():
            if path.stem in done:
                continue
            conn.execute(path.read_text())
            conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.stem,))
            applied_now.append(path.stem)
        conn.commit()
    return applied_now
