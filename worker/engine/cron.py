"""Cron patterns (5 fields) evaluated in an IANA timezone.

Syntax: ``minute hour day-of-month month day-of-week``; each field takes ``*``, numbers,
ranges ``a-b``, steps ``*/n`` / ``a-b/n`` / ``a/n``, lists ``a,b-c``; months and weekdays
take names (``JAN``, ``MON``); weekday 0 and 7 are Sunday. Day-of-month ``L`` is the last
day of the month (``L-2``: two days before it); day-of-week ``5L`` is the last Friday of the
month and ``1#2`` the second Monday. ``?`` means ``*``. Macros ``@yearly @monthly @weekly
@daily @hourly``. As in classic cron, when both day fields are restricted a day matching
either fires.

Ticks are evaluated on the zone's wall clock and returned as UTC instants. Daylight saving:

* a wall time skipped by a spring-forward transition (02:30 in Europe/Paris on the last
  Sunday of March) fires at the same distance past the gap (03:30 CEST), so a daily job never
  loses a day; where that lands on an instant that already fires it is one tick, not two;
* a wall time repeated by a fall-back transition fires once, at its first occurrence — unless
  the hour field is ``*``, in which case both occurrences fire (an hourly job keeps running
  every hour of elapsed time, as Vixie cron does).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
#: how far ahead to look for a match before deciding a pattern never fires (covers Feb 29
#: on a given weekday, which recurs every 28 years)
_HORIZON_DAYS = 366 * 30
_SLACK = timedelta(hours=3)
_LOOKBACK = (
    timedelta(minutes=2),
    timedelta(hours=2),
    timedelta(days=2),
    timedelta(days=40),
    timedelta(days=400),
    timedelta(days=_HORIZON_DAYS),
)


class CronError(ValueError):
    """An invalid cron pattern or timezone; the message says which part and why."""


def _number(token: str, lo: int, hi: int, names: list[str] | None, field: str) -> int:
    upper = token.upper()
    if names and upper in names:
        return names.index(upper) + (1 if names is MONTHS else 0)
    if not token.isdigit():
        raise CronError(
            f"{field}: {token!r} is not a number"
            + (f" or a name ({', '.join(names)})" if names else "")
        )
    value = int(token)
    if not lo <= value <= hi:
        raise CronError(f"{field}: {value} is outside {lo}-{hi}")
    return value


def _field(
    text: str, lo: int, hi: int, field: str, names: list[str] | None = None
) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: empty list item in {text!r}")
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if base in ("*", "?"):
            start, end = lo, hi
        elif "-" in base:
            a, _, b = base.partition("-")
            start, end = _number(a, lo, hi, names, field), _number(b, lo, hi, names, field)
            if start > end:
                raise CronError(f"{field}: range {base!r} goes backwards")
        else:
            start = _number(base, lo, hi, names, field)
            end = hi if step_text else start
        values.update(range(start, end + 1, step))
    return frozenset(values)


@dataclass(frozen=True)
class Cron:
    """A parsed pattern. Use :func:`parse`; iterate with :meth:`next_after` / :meth:`upcoming`."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]  # 1..31
    months: frozenset[int]  # 1..12
    weekdays: frozenset[int]  # 0..6, Sunday = 0
    last_day_offsets: frozenset[int]  # "L" = 0, "L-2" = 2
    last_weekdays: frozenset[int]  # "5L": last Friday
    nth_weekdays: frozenset[tuple[int, int]]  # "1#2": (weekday 1, 2nd)
    dom_restricted: bool
    dow_restricted: bool
    hour_wildcard: bool

    # --- matching ----------------------------------------------------------------------

    def _day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        last = calendar.monthrange(day.year, day.month)[1]
        dom = day.day in self.days or (last - day.day) in self.last_day_offsets
        weekday = (day.weekday() + 1) % 7  # Python Monday=0 -> cron Sunday=0
        dow = (
            weekday in self.weekdays
            or (weekday in self.last_weekdays and day.day + 7 > last)
            or (weekday, (day.day - 1) // 7 + 1) in self.nth_weekdays
        )
        if self.dom_restricted and self.dow_restricted:
            return dom or dow
        if self.dom_restricted:
            return dom
        if self.dow_restricted:
            return dow
        return True

    def _instants(
        self, day: date, zone: ZoneInfo, floor: datetime
    ) -> Iterator[tuple[datetime, datetime]]:
        """(local wall time, UTC instant) of the ticks of one local day from wall time
        ``floor`` on, in wall-clock order."""
        for hour in sorted(self.hours):
            if datetime.combine(day, time(hour, 59)) < floor:
                continue
            for minute in sorted(self.minutes):
                naive = datetime.combine(day, time(hour, minute))
                if naive < floor:
                    continue
                wall = naive.replace(tzinfo=zone)
                first = wall.astimezone(UTC)
                yield naive, first
                if self.hour_wildcard:
                    second = wall.replace(fold=1).astimezone(UTC)
                    if second != first and second.astimezone(zone).replace(tzinfo=None) == naive:
                        yield naive, second  # the repeated hour of a fall-back day

    def next_after(self, after: datetime, timezone: str = "UTC") -> datetime | None:
        """The first tick strictly after ``after`` (an aware datetime), as a UTC datetime.

        None if the pattern never matches again (``0 0 30 2 *``).
        """
        if after.tzinfo is None:
            raise ValueError("after must be timezone-aware")
        zone = zone_info(timezone)
        after = after.astimezone(UTC)
        after_wall = after.astimezone(zone).replace(tzinfo=None)
        # Wall time and instant order agree except across a DST shift (at most a few hours),
        # so candidates more than _SLACK before `after` on the wall clock cannot be later.
        floor = after_wall - _SLACK
        # Start a day early: a skipped wall time of the previous local day can land after it.
        day = after_wall.date() - timedelta(days=1)
        for _ in range(_HORIZON_DAYS):
            if self._day_matches(day):
                best: datetime | None = None
                best_wall = floor
                for naive, instant in self._instants(day, zone, floor):
                    if best is not None and naive > best_wall + _SLACK:
                        break
                    if instant <= after:
                        continue
                    if best is None or instant < best:
                        best, best_wall = instant, naive
                if best is not None:
                    # A later day can only yield later instants (DST shifts are < 1 day).
                    return best
            day += timedelta(days=1)
        return None

    def upcoming(self, after: datetime, timezone: str = "UTC", count: int = 5) -> list[datetime]:
        out: list[datetime] = []
        current = after
        while len(out) < count:
            nxt = self.next_after(current, timezone)
            if nxt is None:
                break
            out.append(nxt)
            current = nxt
        return out

    def latest_at_or_before(
        self, now: datetime, timezone: str, not_before: datetime
    ) -> datetime | None:
        """The last tick in ``[not_before, now]``, or None (used to collapse missed ticks).

        Looks back through growing windows so a long outage costs a few steps, not one per
        missed tick.
        """
        for window in _LOOKBACK:
            start = max(not_before, now - window)
            tick = self.next_after(start - timedelta(microseconds=1), timezone)
            latest = None
            while tick is not None and tick <= now:
                latest = tick
                tick = self.next_after(tick, timezone)
            if latest is not None or start == not_before:
                return latest
        return None

    def describe(self) -> str:
        return self.expression


@lru_cache(maxsize=256)
def zone_info(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(
            f"unknown timezone {name!r}: use an IANA name such as 'UTC', 'Europe/Paris' or "
            "'America/New_York' (GET /api/v1/timezones lists them)"
        ) from None


def timezones(exclude_utc: bool = False) -> list[str]:
    names = sorted(n for n in available_timezones() if "/" in n and not n.startswith("Etc/"))
    return names if exclude_utc else ["UTC", *names]


_LAST_DOM = re.compile(r"^L(?:-(\d+))?$")
_LAST_DOW = re.compile(r"^([0-7]|[A-Za-z]{3})L$")
_NTH_DOW = re.compile(r"^([0-7]|[A-Za-z]{3})#([1-5])$")


@lru_cache(maxsize=1024)
def parse(expression: str) -> Cron:
    """Parse a 5-field pattern (or macro); raise :class:`CronError` naming the bad field."""
    if not isinstance(expression, str) or not expression.strip():
        raise CronError("cron pattern must be a non-empty string like '0 */2 * * *'")
    text = MACROS.get(expression.strip().lower(), expression.strip())
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            f"cron pattern {expression!r} has {len(fields)} fields; expected 5 "
            "(minute hour day-of-month month day-of-week), e.g. '0 */2 * * *'"
        )
    minute, hour, dom, month, dow = fields

    days: set[int] = set()
    last_offsets: set[int] = set()
    for part in dom.split(","):
        if m := _LAST_DOM.match(part.upper()):
            last_offsets.add(int(m.group(1) or 0))
        else:
            days |= _field(part, 1, 31, "day-of-month")

    weekdays: set[int] = set()
    last_weekdays: set[int] = set()
    nth: set[tuple[int, int]] = set()
    for part in dow.split(","):
        if m := _LAST_DOW.match(part):
            last_weekdays.add(_number(m.group(1), 0, 7, DAYS, "day-of-week") % 7)
        elif m := _NTH_DOW.match(part):
            nth.add((_number(m.group(1), 0, 7, DAYS, "day-of-week") % 7, int(m.group(2))))
        else:
            weekdays |= {d % 7 for d in _field(part, 0, 7, "day-of-week", DAYS)}

    return Cron(
        expression=expression.strip(),
        minutes=_field(minute, 0, 59, "minute"),
        hours=_field(hour, 0, 23, "hour"),
        days=frozenset(days),
        months=_field(month, 1, 12, "month", MONTHS),
        weekdays=frozenset(weekdays),
        last_day_offsets=frozenset(last_offsets),
        last_weekdays=frozenset(last_weekdays),
        nth_weekdays=frozenset(nth),
        dom_restricted=dom not in ("*", "?"),
        dow_restricted=dow not in ("*", "?"),
        hour_wildcard=hour in ("*", "*/1"),
    )
