"""``trigger init``: the files of a new project. Existing files are never overwritten."""

from __future__ import annotations

import re
from pathlib import Path

from worker.common.conventions import CONFIG_FILE

CONFIG = '''\
"""The project's configuration, read by trigger dev and trigger worker."""

from worker import define_config

config = define_config(
    project="{ref}",
    dirs=["trigger"],  # folders whose exported tasks are discovered
    max_duration=300,  # seconds per attempt unless a task says otherwise
    retries={{
        "enabled_in_dev": True,
        "default": {{
            "max_attempts": 3,
            "min_timeout_ms": 1000,
            "max_timeout_ms": 10000,
            "factor": 2,
            "randomize": True,
        }},
    }},
)
'''

DB_HELPER = '''\
"""SQL for tasks: one fork-safe connection pool per worker process (see worker.db).

``trigger dev`` gives tasks a database of their own (TASKS_DATABASE_URL); elsewhere set
TASKS_DATABASE_URL or DATABASE_URL in the worker's environment.
"""

from worker.db import close, pool, sql

__all__ = ["close", "pool", "sql"]
'''

EXAMPLE = '''\
"""Example tasks: edit them while trigger dev runs and the next run uses the new code."""

from worker import logger, task

from ._db import sql


@task(id="hello-world", max_duration=60)
async def hello_world(payload: dict, ctx) -> dict:
    name = (payload or {}).get("name", "world")
    logger.info("Saying hello", name=name, attempt=ctx.attempt.number)
    return {"message": f"Hello, {name}!"}


@task(id="count-visit", max_duration=60)
async def count_visit(payload: dict, ctx) -> dict:
    visitor = str((payload or {}).get("visitor", "anonymous"))
    await sql(
        "create table if not exists visits ("
        " id bigserial primary key, visitor text not null,"
        " visited_at timestamptz not null default now())"
    )
    await sql("insert into visits (visitor) values (%s::text)", visitor)
    rows = await sql("select count(*)::int as n from visits where visitor = %s::text", visitor)
    return {"visitor": visitor, "visits": rows[0]["n"]}
'''

TEST = '''\
"""Tasks run in-process by worker.testing.run_task: no API, no database, no worker."""

from worker.testing import run_task

from trigger.example import hello_world


async def test_hello_world():
    result = await run_task(hello_world, {"name": "Ada"}, config=".")  # trigger_config.py hooks
    assert result.ok, result.error
    assert result.output == {"message": "Hello, Ada!"}
    assert "Saying hello" in result.messages
'''

PYTEST_INI = '''\
[pytest]
testpaths = tests
'''

GITIGNORE = ["__pycache__/", ".trigger/", ".venv/"]


def project_ref(folder: Path) -> str:
    """A project ref from a folder name: lowercase letters, digits and dashes."""
    ref = re.sub(r"[^a-z0-9]+", "-", folder.name.lower()).strip("-")
    return ref or "my-project"


def scaffold(target: Path, ref: str | None = None) -> tuple[list[Path], list[Path]]:
    """Write the project files into ``target``; return (written, kept as they were)."""
    target.mkdir(parents=True, exist_ok=True)
    files = {
        CONFIG_FILE: CONFIG.format(ref=ref or project_ref(target)),
        "trigger/__init__.py": "",
        "trigger/_db.py": DB_HELPER,
        "trigger/example.py": EXAMPLE,
        "tests/test_example.py": TEST,
    }
    has_pytest_settings = (target / "pytest.ini").exists() or (
        (target / "pyproject.toml").exists()
        and "[tool.pytest.ini_options]" in (target / "pyproject.toml").read_text()
    )
    if not has_pytest_settings:
        files["pytest.ini"] = PYTEST_INI
    written: list[Path] = []
    kept: list[Path] = []
    for name, text in files.items():
        path = target / name
        if path.exists():
            kept.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    ignore = target / ".gitignore"
    lines = ignore.read_text().splitlines() if ignore.exists() else []
    missing = [entry for entry in GITIGNORE if entry not in lines]
    if missing:
        with ignore.open("a") as out:
            if lines and lines[-1].strip():
                out.write("\n")
            out.write("\n".join(missing) + "\n")
        written.append(ignore)
    return written, kept
