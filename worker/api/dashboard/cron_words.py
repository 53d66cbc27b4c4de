"""Cron expressions in words for the Schedules page ("every 5 minutes", "at 09:30 on
weekdays"). Common shapes only; anything else is shown as the expression itself."""

from __future__ import annotations

DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def _days(field: str) -> str | None:
    if field == "*":
        return "every day"
    if field in ("1-5", "MON-FRI", "mon-fri"):
        return "on weekdays"
    if field in ("0,6", "6,0", "SAT,SUN", "sat,sun"):
        return "on weekends"
    names = []
    for part in field.split(","):
        if not part.isdigit() or int(part) > 7:
            return None
        names.append(DAYS[int(part) % 7])
    return "on " + ", ".join(names)


def describe(expression: str) -> str:
    fields = expression.split()
    if len(fields) != 5:
        return expression
    minute, hour, day, month, weekday = fields
    if month != "*" or (day != "*" and weekday != "*"):
        return expression
    when_days = _days(weekday) if day == "*" else (f"on day {day} of the month"
                                                   if day.isdigit() else None)
    if when_days is None:
        return expression
    if minute == "*" and hour == "*":
        return "every minute" + ("" if when_days == "every day" else f", {when_days}")
    if minute.startswith("*/") and hour == "*" and minute[2:].isdigit():
        text = f"every {minute[2:]} minutes"
        return text + ("" if when_days == "every day" else f", {when_days}")
    if minute.isdigit() and hour == "*":
        return f"every hour at minute {int(minute)}" + (
            "" if when_days == "every day" else f", {when_days}"
        )
    if minute.isdigit() and hour.startswith("*/") and hour[2:].isdigit():
        return f"every {hour[2:]} hours at minute {int(minute)}" + (
            "" if when_days == "every day" else f", {when_days}"
        )
    if minute.isdigit() and all(h.isdigit() for h in hour.split(",")):
        times = ", ".join(f"{int(h):02d}:{int(minute):02d}" for h in hour.split(","))
        return f"at {times} {when_days}"
    return expression
