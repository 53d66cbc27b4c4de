"""The cron parser and iterator: fields, names, L / # / nL, timezones and DST transitions."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from worker.engine.cron import CronError, parse, timezones

PARIS = ZoneInfo("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc, arg-type]


def local(ticks: list[datetime], zone: str) -> list[str]:
    return [t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z") for t in ticks]


def test_fields_ranges_steps_lists_and_names() -> None:
    cron = parse("5,10-12 */6 * JAN-MAR mon-fri")
    ticks = cron.upcoming(utc(2030, 1, 1), "UTC", 6)
    assert [t.strftime("%d %H:%M") for t in ticks] == [
        "01 00:05", "01 00:10", "01 00:11", "01 00:12", "01 06:05", "01 06:10",
    ]
    assert parse("0 0 * * 7").weekdays == parse("0 0 * * 0").weekdays == frozenset({0})
    assert parse("10/20 * * * *").minutes == frozenset({10, 30, 50})
    assert parse("@daily").upcoming(utc(2030, 1, 1, 5), "UTC", 1) == [utc(2030, 1, 2)]


def test_last_day_last_weekday_and_nth_weekday() -> None:
    last_day = parse("0 12 L * *").upcoming(utc(2030, 1, 1), "UTC", 3)
    assert [t.day for t in last_day] == [31, 28, 31]
    assert [t.day for t in parse("0 0 L-1 * *").upcoming(utc(2030, 2, 1), "UTC", 1)] == [27]
    last_friday = parse("0 9 * * 5L").upcoming(utc(2030, 1, 1), "UTC", 2)
    assert [t.strftime("%m-%d %a") for t in last_friday] == ["01-25 Fri", "02-22 Fri"]
    second_monday = parse("0 9 * * MON#2").upcoming(utc(2030, 1, 1), "UTC", 2)
    assert [t.strftime("%m-%d %a") for t in second_monday] == ["01-14 Mon", "02-11 Mon"]


def test_day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    ticks = parse("0 0 13 * FRI").upcoming(utc(2030, 9, 1), "UTC", 4)
    assert [t.strftime("%m-%d") for t in ticks] == ["09-06", "09-13", "09-20", "09-27"]


def test_timezone_is_applied_to_the_wall_clock() -> None:
    nine_in_tokyo = parse("0 9 * * *").next_after(utc(2030, 5, 31, 12), "Asia/Tokyo")
    assert nine_in_tokyo == utc(2030, 6, 1, 0)


def test_spring_forward_skipped_time_fires_after_the_gap_and_no_day_is_lost() -> None:
    # Europe/Paris jumps from 02:00 to 03:00 on 2030-03-31.
    ticks = parse("30 2 * * *").upcoming(utc(2030, 3, 29, 12), "Europe/Paris", 4)
    assert local(ticks, "Europe/Paris") == [
        "2030-03-30 02:30 CET",
        "2030-03-31 03:30 CEST",  # 02:30 does not exist that day: fires one hour of gap later
        "2030-04-01 02:30 CEST",
        "2030-04-02 02:30 CEST",
    ]
    # hourly: the missing 02:00 collapses onto 03:00, one tick per elapsed hour
    hourly = parse("0 * * * *").upcoming(utc(2030, 3, 30, 23, 30), "Europe/Paris", 4)
    assert hourly == [utc(2030, 3, 31, 0), utc(2030, 3, 31, 1), utc(2030, 3, 31, 2),
                      utc(2030, 3, 31, 3)]


def test_fall_back_repeated_time_fires_once_for_fixed_hours_twice_for_wildcard_hours() -> None:
    # Europe/Paris repeats 02:00-03:00 on 2030-10-27.
    daily = parse("30 2 * * *").upcoming(utc(2030, 10, 26, 12), "Europe/Paris", 3)
    assert local(daily, "Europe/Paris") == [
        "2030-10-27 02:30 CEST", "2030-10-28 02:30 CET", "2030-10-29 02:30 CET",
    ]
    hourly = parse("30 * * * *").upcoming(utc(2030, 10, 26, 23), "Europe/Paris", 4)
    assert hourly == [utc(2030, 10, 26, 23, 30), utc(2030, 10, 27, 0, 30),
                      utc(2030, 10, 27, 1, 30), utc(2030, 10, 27, 2, 30)]
    assert local(hourly, "Europe/Paris")[1:3] == ["2030-10-27 02:30 CEST",
                                                  "2030-10-27 02:30 CET"]


def test_new_york_dst() -> None:
    ticks = parse("0 2 * * *").upcoming(utc(2030, 3, 9, 12), "America/New_York", 2)
    assert local(ticks, "America/New_York") == ["2030-03-10 03:00 EDT", "2030-03-11 02:00 EDT"]


def test_latest_tick_collapses_a_long_outage() -> None:
    cron = parse("* * * * *")
    latest = cron.latest_at_or_before(utc(2030, 5, 1, 12, 0, 30), "UTC", utc(2029, 1, 1))
    assert latest == utc(2030, 5, 1, 12, 0)
    assert parse("0 0 1 1 *").latest_at_or_before(utc(2030, 5, 1), "UTC", utc(2030, 2, 1)) is None


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("* * * *", "expected 5"),
        ("60 * * * *", "minute: 60 is outside 0-59"),
        ("* 24 * * *", "hour"),
        ("* * 0 * *", "day-of-month"),
        ("* * * FOO *", "month"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
    ],
)
def test_bad_patterns_name_the_field(pattern: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse(pattern)


def test_never_matching_pattern_and_unknown_timezone() -> None:
    assert parse("0 0 30 2 *").next_after(utc(2030, 1, 1)) is None
    with pytest.raises(CronError, match="unknown timezone"):
        parse("* * * * *").next_after(utc(2030, 1, 1), "Mars/Olympus")
    assert "Europe/Paris" in timezones() and timezones()[0] == "UTC"
    assert "UTC" not in timezones(exclude_utc=True)
