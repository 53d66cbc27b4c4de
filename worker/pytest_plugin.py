"""The pytest plugin shipped with trigger-worker (entry point ``pytest11``, loaded by pytest
whenever the package is installed): task tests work in a project with no pytest settings.

* The project root — the nearest folder with ``trigger_config.py``, from the rootdir, the
  invocation folder or a test path upwards — goes on ``sys.path``, so tests import the task
  package (``from trigger.emails import send_email``) whatever the import mode.
* ``async def`` tests run on a fresh event loop when no other plugin runs them (pytest-asyncio
  in auto mode, or a test marked ``@pytest.mark.asyncio``, keeps its own behaviour), so
  ``await run_task(...)`` needs no ``asyncio_mode`` setting.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from pathlib import Path

import pytest

from worker.common.conventions import CONFIG_FILE


def find_project_root(*starts: Path) -> Path | None:
    for start in starts:
        here = start.resolve()
        for folder in (here, *here.parents):
            if (folder / CONFIG_FILE).is_file():
                return folder
    return None


def pytest_configure(config: pytest.Config) -> None:
    starts = [Path(config.rootpath), Path(config.invocation_params.dir)]
    starts += [Path(arg.split("::")[0]) for arg in config.args if not arg.startswith("-")]
    root = find_project_root(*starts)
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))


def _handled_elsewhere(item: pytest.Function) -> bool:
    """pytest-asyncio (auto mode, or a marked test) runs this coroutine itself."""
    return item.get_closest_marker("asyncio") is not None or type(item).__name__ != "Function"


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    func = pyfuncitem.obj
    if not inspect.iscoroutinefunction(func) or _handled_elsewhere(pyfuncitem):
        return None
    names = pyfuncitem._fixtureinfo.argnames
    kwargs: dict[str, object] = {name: pyfuncitem.funcargs[name] for name in names}
    asyncio.run(func(**kwargs))
    return True
