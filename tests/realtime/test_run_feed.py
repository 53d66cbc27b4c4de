"""engine/run_feed.py's replay of a run's changes for a subscriber that reads the row late.

The full path (real API, SSE) is tests/realtime/test_realtime.py; there the reader is late only
when the machine is busy, so the rule that keeps every change is pinned here, on the function
that applies it."""

from __future__ import annotations

from worker.engine.realtime import RunChange
from worker.engine.run_feed import as_of

LEASED, METADATA, DONE = 1_000, 2_000, 3_000
NOW = {"id": "run_1", "status": "COMPLETED", "updated_us": DONE, "output": '{"done":true}',
       "output_type": "application/json", "completed_at": "t", "metadata": {"step": 2}}


def test_a_late_reader_gives_each_change_its_own_time_and_status() -> None:
    executing = {**NOW, "status": "EXECUTING", "updated_us": METADATA, "output": None,
                 "output_type": None, "completed_at": None}
    # read when the metadata update had already happened: the lease keeps its own time, so
    # the metadata update (same status, later) is not taken for a change already sent
    leased = as_of(executing, RunChange("run_1", None, "EXECUTING", LEASED))
    assert (leased["status"], leased["updated_us"]) == ("EXECUTING", LEASED)
    # read after the completion: each earlier change shows its status, without the output
    for when in (LEASED, METADATA):
        past = as_of(NOW, RunChange("run_1", None, "EXECUTING", when))
        assert (past["status"], past["updated_us"], past["output"]) == ("EXECUTING", when, None)
    assert as_of(NOW, RunChange("run_1", None, "COMPLETED", DONE)) is NOW
