"""Guards of the architecture (docs/architecture.md, "Layers"), fast enough for every run.

- the import contracts in pyproject.toml (``[tool.importlinter]``) hold: the layers, what each
  package may not import, no import cycles inside a package;
- no module of ``worker/`` is longer than :data:`MAX_LINES`;
- every environment variable the code names is in the README's "Configuration" table, and the
  table lists nothing the code no longer reads; the code reads them through
  ``worker/common/settings.py`` only;
- no comment cites a document outside the repository.

``python -m tests.arch_counts`` prints the ``Any`` / ``dict[str, Any]`` / ``.get("`` counts.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "worker"

MAX_LINES = 400
#: modules allowed past MAX_LINES, each with the reason
LONG_MODULES: dict[str, str] = {}


def _contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return contracts


@cache
def _lint_report() -> str:
    """import-linter's report on every contract (one graph build for all of them)."""
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='pyproject.toml', no_logo=True, no_cache=True))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    return done.stdout + done.stderr


@pytest.mark.parametrize("name", [str(c["name"]) for c in _contracts()])
def test_import_contract(name: str) -> None:
    report = _lint_report()
    if f"{name} KEPT" not in report:
        broken = report.split("Broken contracts", 1)[-1]
        start = broken.find(f"\n{name}\n")
        pytest.fail(broken[start:start + 2000] if start >= 0 else report, pytrace=False)


def test_common_forbids_every_other_module_of_ours() -> None:
    """The "common imports nothing of ours" contract names every other part of ``worker``."""
    (contract,) = [c for c in _contracts() if c.get("source_modules") == ["worker.common"]]
    graph = grimp.build_graph("worker", cache_dir=None)
    others = {m for m in graph.find_children("worker")} - {"worker.common", "worker.__main__"}
    listed = set(contract["forbidden_modules"])  # type: ignore[call-overload]
    assert listed == others, f"list in pyproject.toml: {sorted(others - listed)}; " \
                             f"gone: {sorted(listed - others)}"
    assert not any(graph.direct_import_exists(importer=m, imported="worker")
                   for m in graph.find_descendants("worker.common"))


def _modules() -> list[Path]:
    return sorted(WORKER.rglob("*.py"))


def test_no_module_is_too_long() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _modules()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    unexplained = {path: n for path, n in long.items() if path not in LONG_MODULES}
    assert not unexplained, f"modules over {MAX_LINES} lines: {unexplained}"


# --- configuration ------------------------------------------------------------------------------

#: a string that is exactly a variable's name (``env_int("TRIGGER_X", …)``, ``os.environ.get``,
#: a constant such as ``ENV_VAR = "TRIGGER_ENCRYPTION_KEY"``)
ENV_NAME = re.compile(r"^(TRIGGER_[A-Z0-9_]+|TASKS_[A-Z0-9_]+|OTEL_[A-Z0-9_]+|DATABASE_URL|PORT)$")
#: read by a library we configure, not by our code
READ_BY_LIBRARIES = {"OTEL_EXPORTER_OTLP_HEADERS"}


def variables_in_code() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                    and ENV_NAME.match(node.value):
                found.setdefault(node.value, set()).add(str(path.relative_to(ROOT)))
    return found


def variables_in_readme() -> set[str]:
    """The first column of the table under "## Configuration" whose header starts
    ``| variable``."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    table = section.split("\n| variable ", 1)[1].split("\n\n", 1)[0]
    names: set[str] = set()
    for row in table.splitlines()[2:]:
        names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]))
    return names


def test_every_variable_the_code_reads_is_documented() -> None:
    missing = {name: sorted(files) for name, files in variables_in_code().items()
               if name not in variables_in_readme()}
    assert not missing, f"add these to the README's Configuration table: {missing}"


def test_the_configuration_table_lists_only_variables_in_use() -> None:
    stale = variables_in_readme() - set(variables_in_code()) - READ_BY_LIBRARIES
    assert not stale, f"the README documents variables nothing reads: {sorted(stale)}"


SETTINGS_MODULE = WORKER / "common" / "settings.py"


def _is_environ(node: ast.expr) -> bool:
    """``os.environ`` or a bare ``environ``."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ")


def _raw_reads(tree: ast.Module) -> list[tuple[int, str]]:
    """``os.environ.get(X)``, ``os.environ[X]`` (read), ``os.getenv(X)`` where X is a
    variable's name, literally or through a module constant."""
    constants = {target.id: node.value.value for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                 and isinstance(node.value.value, str)
                 for target in node.targets if isinstance(target, ast.Name)}

    def name_of(arg: ast.expr) -> str | None:
        value = arg.value if isinstance(arg, ast.Constant) else (
            constants.get(arg.id) if isinstance(arg, ast.Name) else None)
        return value if isinstance(value, str) and ENV_NAME.match(value) else None

    reads = []
    for node in ast.walk(tree):
        key: ast.expr | None = None
        if isinstance(node, ast.Call) and node.args and isinstance(node.func, ast.Attribute):
            func = node.func
            if (func.attr == "get" and _is_environ(func.value)) or func.attr == "getenv":
                key = node.args[0]
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and _is_environ(node.value):
            key = node.slice
        if key is not None and (name := name_of(key)):
            reads.append((node.lineno, name))
    return reads


def test_the_environment_is_read_through_settings_only() -> None:
    raw = [f"{path.relative_to(ROOT)}:{line}: {name}" for path in _modules()
           if path != SETTINGS_MODULE
           for line, name in _raw_reads(ast.parse(path.read_text()))]
    assert not raw, "read these with worker/common/settings.py:\n" + "\n".join(raw)


# --- the project stands on its own ----------------------------------------------------------------

#: citations of documents outside the repository (cite docs/*.md sections by name instead)
OUTSIDE = re.compile(r"design §|reference §|\.\./shared|(?<![\w/])§\s?\d")


def test_no_comment_cites_documents_outside_the_repository() -> None:
    places = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *_modules()]
    cites = [f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
             for path in places
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if OUTSIDE.search(line)]
    assert not cites, "\n".join(cites)
