"""Builders of small fixture projects for runtime tests."""

from __future__ import annotations

import textwrap
from pathlib import Path


def write_project(root: Path, files: dict[str, str], *, config: str | None = None,
                  package: str = "trigger") -> Path:
    """A project in ``root``: ``trigger_config.py`` plus ``files`` (paths relative to root)."""
    root.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = (
            "from worker.sdk.config import define_config\n"
            f"config = define_config(project='proj', dirs=[{package!r}], max_duration=60)\n"
        )
    (root / "trigger_config.py").write_text(textwrap.dedent(config))
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root
