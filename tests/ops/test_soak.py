"""The chaos soak's small version (bench/soak.py): ~300 runs on a private Postgres cluster with 2
API and 3 worker replicas under SIGKILLs, SIGSTOPs and one Postgres kill -9; every invariant
checked from the database and the tasks' side-effect ledger."""

from __future__ import annotations

import shutil

import pytest

from bench.soak import Soak, _pg_bin


def test_small_chaos_soak_keeps_every_invariant() -> None:
    if not (shutil.which("initdb") or _pg_bin("initdb")):
        pytest.skip("no initdb to make a private Postgres cluster")
    result = Soak(runs=300, rate=15, interval=2.0, seed=5, drain_timeout=60).run()
    print(result)
    assert result["runs_triggered"] == 300
    assert result["lost"] == 0, result
    assert result["double_success"] == 0, result
    assert result["step_effects_after_recording"] == 0, result
    assert result["limited_peak_concurrency"] <= 2, result
    assert result["limited_runs_checked"] > 0
    assert result["cron_ticks_not_once"] == 0, result
    assert result["idempotency_keys_with_more_runs"] == 0, result
    assert result["orphan_processes"] == 0, result
    faults = result["faults"]
    assert faults.get("kill_postgres") == 1 and sum(faults.values()) >= 5, faults
