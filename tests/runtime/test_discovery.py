"""Discovery: exports, __all__, duplicates, import errors, config defaults, hashing."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.runtime.projects import write_project
from worker.runtime.discovery import DiscoveryError, discover


def pkg() -> str:
    # A unique package name per test: discovery imports into this interpreter's sys.modules.
    return f"tasks_{uuid.uuid4().hex[:8]}"


def test_exported_tasks_and_helper_imports(tmp_path: Path) -> None:
    p = pkg()
    root = write_project(tmp_path, {
        f"{p}/_db.py": "VALUE = 1\n",
        f"{p}/a.py": f"""
            from worker.sdk.task import task
            from ._db import VALUE
            from {p}._db import VALUE as V2

            @task(id="a", retry={{"max_attempts": 5}})
            async def a(payload, ctx):
                return VALUE + V2
            """,
        f"{p}/sub/b.py": """
            from worker.sdk.task import task
            b = task(id="b", run=lambda payload: 1, machine="large-1x", max_duration=7)
            """,
        f"{p}/test_ignored.py": "raise RuntimeError('never imported')\n",
        f"{p}/x_test.py": "raise RuntimeError('never imported')\n",
    }, config=f"""
        from worker.sdk.config import define_config
        config = define_config(project="proj", dirs=["{p}"], max_duration=99,
                               retries={{"default": {{"max_attempts": 2}}}}, machine="micro")
        """, package=p)
    found = discover(root)
    assert sorted(found.tasks) == ["a", "b"]
    by_id = {m["id"]: m for m in found.manifest}
    assert by_id["a"]["retry"] == {"max_attempts": 5}
    assert by_id["a"]["max_duration"] == 99
    assert by_id["a"]["machine"] == "micro"
    assert by_id["a"]["file"] == f"{p}/a.py"
    assert by_id["b"]["retry"] == {"max_attempts": 2}
    assert by_id["b"]["max_duration"] == 7
    assert by_id["b"]["machine"] == "large-1x"
    assert found.unexported == []
    assert len(found.content_hash) == 64


def test_content_hash_changes_with_helper_files(tmp_path: Path) -> None:
    p = pkg()
    root = write_project(tmp_path, {f"{p}/_db.py": "X = 1\n", f"{p}/a.py": "\n"}, package=p)
    first = discover(root).content_hash
    assert discover(root).content_hash == first
    (root / p / "_db.py").write_text("X = 2\n")
    assert discover(root).content_hash != first


def test_unexported_tasks_are_reported_with_file_and_line(tmp_path: Path) -> None:
    p = pkg()
    root = write_project(tmp_path, {
        f"{p}/a.py": """
            from worker.sdk.task import task

            __all__ = ["listed"]

            listed = task(id="listed", run=lambda payload: 1)
            not_listed = task(id="not-listed", run=lambda payload: 1)
            _private = task(id="private", run=lambda payload: 1)

            def make():
                return task(id="nested", run=lambda payload: 1)

            made = [make()]
            """,
        f"{p}/b.py": """
            from worker.sdk.task import task
            _hidden = task(id="hidden", run=lambda payload: 1)
            """,
    }, package=p)
    found = discover(root)
    assert sorted(found.tasks) == ["listed"]
    where = {u["id"]: (Path(u["file"]).name, u["line"]) for u in found.unexported}
    assert where == {"not-listed": ("a.py", 7), "private": ("a.py", 8),
                     "nested": ("a.py", 11), "hidden": ("b.py", 3)}


def test_duplicate_ids_name_both_places(tmp_path: Path) -> None:
    p = pkg()
    root = write_project(tmp_path, {
        f"{p}/a.py": """
            from worker.sdk.task import task
            one = task(id="same", run=lambda payload: 1)
            """,
        f"{p}/b.py": """
            from worker.sdk.task import task


            two = task(id="same", run=lambda payload: 2)
            """,
    }, package=p)
    with pytest.raises(DiscoveryError) as err:
        discover(root)
    message = str(err.value)
    assert "duplicate task id 'same'" in message
    assert f"{p}/a.py:3" in message and f"{p}/b.py:5" in message


def test_import_error_names_file_and_line(tmp_path: Path) -> None:
    p = pkg()
    root = write_project(tmp_path, {
        f"{p}/good.py": "X = 1\n",
        f"{p}/bad.py": "\n\nimport does_not_exist_anywhere\n",
    }, package=p)
    with pytest.raises(DiscoveryError) as err:
        discover(root)
    message = str(err.value)
    assert f"{p}/bad.py:3" in message
    assert "ModuleNotFoundError" in message


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    p = pkg()
    root = write_project(tmp_path, {f"{p}/bad.py": "x = 1\ndef broken(:\n"}, package=p)
    with pytest.raises(DiscoveryError) as err:
        discover(root)
    assert f"{p}/bad.py:2" in str(err.value)


def test_missing_or_invalid_config(tmp_path: Path) -> None:
    with pytest.raises(DiscoveryError, match=r"trigger_config\.py"):
        discover(tmp_path)
    (tmp_path / "trigger_config.py").write_text("config = {'project': 'x'}\n")
    with pytest.raises(DiscoveryError, match="define_config"):
        discover(tmp_path)
    (tmp_path / "trigger_config.py").write_text(
        "from worker.sdk.config import define_config\nconfig = define_config(projekt='x')\n")
    with pytest.raises(DiscoveryError, match=r"trigger_config\.py"):
        discover(tmp_path)
