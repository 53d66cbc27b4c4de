"""Named SQL queries loaded from ``sql/queries.sql`` (one ``-- name: x`` header per query)."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    text = (SQL_DIR / "queries.sql").read_text()
    parts = _HEADER.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


class _Queries:
    """Attribute access to the named queries: ``Q.dequeue``."""

    def __getattr__(self, name: str) -> str:
        try:
            return _load()[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in sql/queries.sql") from None


Q = _Queries()
