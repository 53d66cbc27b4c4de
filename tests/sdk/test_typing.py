"""The SDK's public surface type-checks strictly, and its generics carry payload and output
types (``Task[Payload, Output]``): ``mypy --strict`` over worker/sdk, the public ``worker``
names and tests/sdk/typing_cases (``assert_type`` assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mypy-cache")


def _mypy(cache: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", f"--cache-dir={cache}", *targets],
        capture_output=True, text=True, cwd=ROOT,
    )


def test_sdk_public_names_and_generics_are_strictly_typed(mypy_cache: Path) -> None:
    out = _mypy(mypy_cache, "worker/sdk", "worker/__init__.py",
                "tests/sdk/typing_cases/generics.py")
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_wrong_output_type_is_caught(mypy_cache: Path, tmp_path: Path) -> None:
    case = tmp_path / "wrong.py"
    case.write_text(
        "from typing import assert_type\n"
        "from worker import RunHandle, task\n"
        "@task(id='t')\n"
        "async def t(payload: int) -> str:\n"
        "    return str(payload)\n"
        "async def go() -> None:\n"
        "    assert_type(await t.trigger(1), RunHandle[int])\n"
    )
    out = _mypy(mypy_cache, str(case))
    assert out.returncode == 1, out.stdout
    assert 'Expression is of type "RunHandle[str]"' in out.stdout, out.stdout
