"""Discovery: load ``trigger_config.py``, import the task packages, index exported tasks.

Runs once per code version, in the zygote (a fresh interpreter). The result is the manifest the
supervisor registers, plus the in-memory task registry the forked executors inherit.

Rules (docs/architecture.md, "Discovery"):
* the project root goes on ``sys.path`` and every folder of ``config.dirs`` is imported as a
  package, so task files import each other either way (``from ._db import sql`` /
  ``from trigger._db import sql``);
* task files are ``*.py`` not starting with ``_`` and not named ``test_*.py`` / ``*_test.py``
  (``_db.py`` and friends are still importable by tasks);
* a task is exported when bound to a public module-level name (and listed in ``__all__`` where
  the module has one); any other task is reported with file:line and never runs;
* duplicate task ids fail discovery, naming both places.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from worker.common.conventions import CONFIG_FILE
from worker.sdk.config import Config
from worker.sdk.task import Task, created_tasks

__all__ = ["CONFIG_FILE", "Discovered", "DiscoveryError", "discover", "load_config"]


class DiscoveryError(Exception):
    """Discovery failed; the message names the file (and line) and what to fix."""


@dataclass
class Discovered:
    config: Config
    project_dir: Path
    tasks: dict[str, Task]
    manifest: list[dict[str, Any]]
    content_hash: str
    #: tasks that were created but are not exported: {"id", "file", "line", "reason"}
    unexported: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """JSON-able description (what the zygote prints for the supervisor)."""
        return {
            "tasks": self.manifest,
            "content_hash": self.content_hash,
            "unexported": self.unexported,
            "config": {
                "project": self.config.project,
                "dirs": self.config.dirs,
                "concurrency": self.config.concurrency,
                "max_runs_per_process": self.config.max_runs_per_process,
                "max_memory_per_process": self.config.max_memory_per_process,
                "max_duration": self.config.max_duration,
            },
        }


def is_task_file(path: Path) -> bool:
    name = path.name
    return (
        name.endswith(".py")
        and not name.startswith("_")
        and not name.startswith("test_")
        and not name.endswith("_test.py")
    )


def _project_files(project_dir: Path, config: Config) -> list[Path]:
    """Every .py file of the task dirs (helpers included) plus the config, sorted."""
    files = [project_dir / CONFIG_FILE]
    for d in config.dirs:
        root = project_dir / d
        files.extend(
            p for p in sorted(root.rglob("*.py")) if "__pycache__" not in p.parts and p.is_file()
        )
    return files


def content_hash(project_dir: Path, config: Config) -> str:
    h = hashlib.sha256()
    for path in _project_files(project_dir, config):
        h.update(str(path.relative_to(project_dir)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()


def _where(exc: BaseException, project_dir: Path, default_file: Path) -> str:
    """``file:line`` of the innermost frame inside the project (or of the syntax error)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{exc.filename}:{exc.lineno}"
    best = f"{default_file}"
    root = str(project_dir)
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(root):
            best = f"{frame.filename}:{frame.lineno}"
    return best


def load_config(project_dir: Path) -> Config:
    path = project_dir / CONFIG_FILE
    if not path.is_file():
        raise DiscoveryError(f"{path}: not found (a project needs a {CONFIG_FILE})")
    sys.modules.pop("trigger_config", None)
    spec = importlib.util.spec_from_file_location("trigger_config", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["trigger_config"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc))
        raise DiscoveryError(
            f"{_where(exc, project_dir, path)}: error loading {CONFIG_FILE}: "
            f"{type(exc).__name__}: {exc}\n{tb}"
        ) from None
    config = getattr(module, "config", None)
    if not isinstance(config, Config):
        raise DiscoveryError(
            f"{path}: must bind the result of define_config(...) to a module-level name `config`"
            f" (found {type(config).__name__})"
        )
    return config


def _package_name(d: str) -> str:
    name = d.strip("/").replace("/", ".")
    if not name or not all(part.isidentifier() for part in name.split(".")):
        raise DiscoveryError(f"{CONFIG_FILE}: dirs entry {d!r} is not importable as a package")
    return name


def _purge(package: str) -> None:
    # Only matters when discovery runs twice in one interpreter (tests); the zygote is fresh.
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def _bind_package(project_dir: Path, package: str) -> None:
    """Bind ``package`` (and its parents) to the project's folders explicitly.

    A folder without ``__init__.py`` would otherwise be a namespace package, and Python lets a
    regular package of the same name anywhere on ``sys.path`` win over it (e.g. an installed
    ``trigger``), so the project's own files would not be found.
    """
    parts = package.split(".")
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        folder = project_dir.joinpath(*parts[:i])
        init = folder / "__init__.py"
        if not init.is_file():  # no __init__.py: an empty package rooted at the folder
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(folder)]
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
        else:
            found = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[str(folder)])
            if found is None or found.loader is None:
                raise DiscoveryError(f"{folder}: cannot be imported as package {name!r}")
            module = importlib.util.module_from_spec(found)
            sys.modules[name] = module
            try:
                found.loader.exec_module(module)
            except Exception as exc:
                sys.modules.pop(name, None)
                tb = "".join(traceback.format_exception(exc))
                raise DiscoveryError(
                    f"{_where(exc, project_dir, init)}: error importing {init}: "
                    f"{type(exc).__name__}: {exc}\n{tb}") from None
        if i > 1:
            setattr(sys.modules[".".join(parts[: i - 1])], parts[i - 1], module)


def _import_task_modules(project_dir: Path, config: Config) -> list[ModuleType]:
    modules: list[ModuleType] = []
    for d in config.dirs:
        root = project_dir / d
        if not root.is_dir():
            raise DiscoveryError(f"{CONFIG_FILE}: task dir {d!r} does not exist in {project_dir}")
        package = _package_name(d)
        _purge(package)
        _bind_package(project_dir, package)
        for path in sorted(root.rglob("*.py")):
            if "__pycache__" in path.parts or not is_task_file(path):
                continue
            rel = path.relative_to(root).with_suffix("")
            name = ".".join([package, *rel.parts])
            try:
                modules.append(importlib.import_module(name))
            except Exception as exc:
                tb = "".join(traceback.format_exception(exc))
                raise DiscoveryError(
                    f"{_where(exc, project_dir, path)}: error importing {path}: "
                    f"{type(exc).__name__}: {exc}\n{tb}"
                ) from None
    return modules


def _exports(module: ModuleType) -> list[tuple[str, Any]]:
    public = getattr(module, "__all__", None)
    if public is not None:
        return [(n, getattr(module, n, None)) for n in public]
    return [(n, v) for n, v in vars(module).items() if not n.startswith("_")]


def _apply_defaults(manifest: dict[str, Any], config: Config, project_dir: Path) -> dict[str, Any]:
    if manifest.get("retry") is None:
        manifest["retry"] = config.retries.default
    if manifest.get("max_duration") is None:
        manifest["max_duration"] = config.max_duration
    if manifest.get("machine") is None:
        manifest["machine"] = config.machine
    if manifest.get("ttl") is None and config.ttl is not None:
        manifest["ttl"] = config.ttl
    file = manifest.get("file")
    if isinstance(file, str) and file.startswith(str(project_dir)):
        manifest["file"] = str(Path(file).relative_to(project_dir))
    return manifest


def discover(project_dir: Path | str) -> Discovered:
    """Import the project and index its exported tasks; raise DiscoveryError on any problem."""
    project_dir = Path(project_dir).resolve()
    root = str(project_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.invalidate_caches()
    baseline = len(created_tasks())
    config = load_config(project_dir)
    modules = _import_task_modules(project_dir, config)

    exported: dict[int, Task] = {}
    for module in modules:
        for _name, value in _exports(module):
            if isinstance(value, Task):
                exported.setdefault(id(value), value)

    by_id: dict[str, Task] = {}
    for t in sorted(exported.values(), key=lambda t: t.source):
        other = by_id.get(t.id)
        if other is not None:
            raise DiscoveryError(
                f"duplicate task id {t.id!r}: declared at {other.source[0]}:{other.source[1]} "
                f"and at {t.source[0]}:{t.source[1]}"
            )
        by_id[t.id] = t

    unexported = []
    for t in created_tasks()[baseline:]:
        if id(t) in exported:
            continue
        unexported.append(
            {
                "id": t.id,
                "file": t.source[0],
                "line": t.source[1],
                "reason": "not exported: bind it to a public module-level name of a task file"
                " (and list it in __all__ when the module has one); it will not run",
            }
        )

    manifest = [_apply_defaults(t.manifest(), config, project_dir) for t in by_id.values()]
    return Discovered(
        config=config,
        project_dir=project_dir,
        tasks=by_id,
        manifest=manifest,
        content_hash=content_hash(project_dir, config),
        unexported=unexported,
    )
