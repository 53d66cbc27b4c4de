"""Named SQL queries loaded from ``sql/queries/*.sql`` (one ``-- name: x`` header per query).

Each file groups the queries of one area (runs, leases, ...); names are unique across files.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"
_HEADER = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
#: whole-line comments and each line's indentation, left out of the text sent: psycopg caches
#: the conversion of a query's %(name)s placeholders only for texts up to 4 KiB, and the
#: dequeue's comments made it longer (no string literal spans lines: _load checks)
_COMMENT_LINE = re.compile(r"^[ \t]*--[^\n]*\n", re.MULTILINE)
_INDENT = re.compile(r"^[ \t]+", re.MULTILINE)


@cache
def _load() -> dict[str, str]:
    queries: dict[str, str] = {}
    for path in sorted((SQL_DIR / "queries").glob("*.sql")):
        parts = _HEADER.split(path.read_text())
        # parts = [preamble, name1, body1, name2, body2, ...]
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in queries:
                raise RuntimeError(f"query {name!r} is defined twice (again in {path.name})")
            text = _COMMENT_LINE.sub("", body.strip() + "\n").strip()
            if any(line.count("'") % 2 for line in text.splitlines()):
                raise RuntimeError(f"query {name!r} has a string literal across lines")
            queries[name] = _INDENT.sub("", text)
    return queries


class _Queries:
    """Attribute access to the named queries: ``Q.dequeue``."""

    def __getattr__(self, name: str) -> str:
        try:
            return _load()[name]
        except KeyError:
            raise AttributeError(f"no query named {name!r} in sql/queries/*.sql") from None


Q = _Queries()
