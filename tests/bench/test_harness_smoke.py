"""Smoke test of the benchmark harness: tiny N, our system only (CI installs `.[test]`, not the
`bench` extra). Asserts that a table comes out; never asserts on timings."""

from __future__ import annotations

import os

import pytest

from bench import cli
from bench.common import DEFAULT_PG, Missing, check_postgres


def _server_url() -> tuple[str, object | None]:
    """A Postgres server URL: DATABASE_URL (as the suite uses), else the local server the
    harness defaults to, else the suite's embedded Postgres (a fresh CI machine has only
    Python). The second item keeps an embedded server alive: hold it while using the URL."""
    url = os.environ.get("DATABASE_URL")
    if url:
        return url, None
    try:
        check_postgres(DEFAULT_PG)
        return DEFAULT_PG, None
    except Missing:
        from tests.conftest import _server_url as suite_server_url

        return suite_server_url()


def test_harness_produces_a_table_for_our_system(capsys: pytest.CaptureFixture[str]) -> None:
    url, server = _server_url()
    try:
        check_postgres(url)
    except Missing as exc:
        pytest.skip(f"the harness needs a reachable Postgres server: {exc}")
    code = cli.main(["--systems", "ours", "--n", "20", "--latency-n", "5", "--reps", "1",
                     "--warm-runs", "5", "--cold-runs", "1", "--pg", url, "--strict"])
    out = capsys.readouterr().out
    del server  # an embedded Postgres may stop now
    assert code == 0, out
    assert "| metric | trigger-worker |" in out
    for metric in ("drain (/s)", "trigger → body starts p50", "cold start (s)",
                   "cold / warm", "per executor USS"):
        assert metric in out, f"{metric!r} missing from:\n{out}"


def test_peers_report_missing_packages_or_services_clearly() -> None:
    """Without the bench extra (or Redis), a peer is skipped with a reason, not a crash."""
    from bench.systems import Options
    from bench.systems.celery_peer import CeleryPeer

    peer = CeleryPeer(Options(n=1, latency_n=1, pg_url=DEFAULT_PG,
                              redis_url="redis://127.0.0.1:1", log_dir=None))  # type: ignore[arg-type]
    with pytest.raises(Missing) as info:
        peer.setup()
    assert "pip install -e '.[bench]'" in str(info.value) or "not reachable" in str(info.value)
