"""The numbers issue 13 tracks in ``worker/``: ``python -m tests.arch_counts [FOLDER]``.

Counted as ``grep -o`` counts them (occurrences in the text, comments and docstrings
included): ``Any``, ``dict[str, Any]`` and ``.get("``; per top-level part and in total.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Counts:
    any: int
    dict_any: int
    get: int

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.any + other.any, self.dict_any + other.dict_any, self.get + other.get)


def count_text(text: str) -> Counts:
    return Counts(text.count("Any"), text.count("dict[str, Any]"), text.count('.get("'))


def count_files(files: list[Path]) -> Counts:
    total = Counts(0, 0, 0)
    for path in files:
        total += count_text(path.read_text())
    return total


def by_part(root: Path) -> dict[str, Counts]:
    """``api``, ``engine``, …, and ``(top)`` for the modules directly in ``root``."""
    parts: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        parts.setdefault(rel.parts[0] if len(rel.parts) > 1 else "(top)", []).append(path)
    return {name: count_files(files) for name, files in parts.items()}


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent / "worker"
    parts = by_part(root)
    get = '.get("'
    print(f"{'part':<10} {'Any':>6} {'dict[str, Any]':>15} {get:>7}")
    total = Counts(0, 0, 0)
    for name, counts in parts.items():
        total += counts
        print(f"{name:<10} {counts.any:>6} {counts.dict_any:>15} {counts.get:>7}")
    print(f"{'total':<10} {total.any:>6} {total.dict_any:>15} {total.get:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
