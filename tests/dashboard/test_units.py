"""Pure helpers of the dashboard: cron in words, the Test page's payload from a JSON schema."""

from __future__ import annotations

from worker.api.dashboard.cron_words import describe
from worker.api.dashboard.routes_pages import example_of


def test_cron_in_words() -> None:
    assert describe("* * * * *") == "every minute"
    assert describe("*/15 * * * *") == "every 15 minutes"
    assert describe("5 * * * *") == "every hour at minute 5"
    assert describe("0 9 * * 1-5") == "at 09:00 on weekdays"
    assert describe("30 8,18 * * *") == "at 08:30, 18:30 every day"
    assert describe("0 0 1 * *") == "at 00:00 on day 1 of the month"
    assert describe("0 12 * * 0") == "at 12:00 on Sunday"
    assert describe("0 0 1 1 *") == "0 0 1 1 *"  # not a common shape: the expression itself


def test_payload_example_from_schema() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "default": "world"},
            "count": {"type": "integer"},
            "mode": {"enum": ["fast", "slow"]},
            "when": {"type": ["null", "string"]},
            "inner": {"type": "object", "properties": {"ok": {"type": "boolean"}}},
            "items": {"type": "array", "examples": [[1, 2]]},
        },
    }
    assert example_of(schema) == {
        "name": "world", "count": 0, "mode": "fast", "when": "",
        "inner": {"ok": False}, "items": [1, 2],
    }
