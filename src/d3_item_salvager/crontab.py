"""Standard 5-field crontab expressions (`minute hour day month weekday`) as APScheduler triggers.

APScheduler 3 reads crontab text with two differences from cron itself, both of which would make a
job run on other days than the operator wrote: its weekday numbers start at Monday (cron's `0` and
`7` are Sunday), and it runs only when day of month AND weekday match, where cron runs when either
does (unless one of them starts with `*`). So the weekday field is translated to weekday names,
which both read the same way, and an expression that restricts both days is refused rather than
read differently.

Kept below the config layer: config validates an expression with it, the scheduler builds the
trigger with it. APScheduler is imported only when an expression is actually read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import tzinfo

    from apscheduler.triggers.cron import CronTrigger

FIELDS = ("minute", "hour", "day", "month", "day_of_week")
# Cron's weekday numbers: 0 (and 7) is Sunday.
WEEKDAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday_number(token: str) -> int:
    name = token.lower()
    if name in WEEKDAY_NAMES:
        return WEEKDAY_NAMES.index(name)
    if name.isdigit() and int(name) <= 7:
        return int(name)
    raise ValueError(f"weekday {token!r} is not 0-7 or sun-sat")


def _weekdays(part: str) -> set[int]:
    """One comma-separated part of the weekday field: `*`, `N`, `A-B`, each with an optional `/S`."""
    span, _, step_text = part.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ValueError(f"step {step_text!r} in the weekday field is not a positive number")
        step = int(step_text)
    if span == "*":
        first, last = 0, 6
    elif "-" in span:
        start, _, end = span.partition("-")
        first, last = _weekday_number(start), _weekday_number(end)
        if first > last:
            raise ValueError(f"weekday range {span!r} runs backwards")
    elif step_text:
        raise ValueError(f"a step needs a range or '*' in the weekday field, not {part!r}")
    else:
        first = last = _weekday_number(span)
    return {day % 7 for day in range(first, last + 1, step)}


def _weekday_field(text: str) -> str:
    """The weekday field as APScheduler weekday names (`1-5` -> `mon,tue,wed,thu,fri`)."""
    if text == "*":
        return text
    days: set[int] = set()
    for part in text.split(","):
        days |= _weekdays(part)
    return ",".join(WEEKDAY_NAMES[day] for day in sorted(days))


def cron_fields(expression: str) -> dict[str, str]:
    """CronTrigger keyword arguments for a standard 5-field crontab expression.

    Raises:
        ValueError: not five fields, a bad weekday, or both day of month and weekday restricted.
    """
    values = expression.split()
    if len(values) != len(FIELDS):
        raise ValueError(f"needs 5 fields (minute hour day month weekday), not {len(values)}")
    fields = dict(zip(FIELDS, values, strict=True))
    weekdays = _weekday_field(fields["day_of_week"])
    if not fields["day"].startswith("*") and not fields["day_of_week"].startswith("*"):
        raise ValueError(
            "restrict either the day of the month or the weekday, not both (cron runs when "
            "either matches, this scheduler only when both do)"
        )
    fields["day_of_week"] = weekdays
    return fields


def cron_trigger(
    expression: str, timezone: tzinfo | str = "UTC", jitter_seconds: float = 0
) -> CronTrigger:
    """An APScheduler CronTrigger firing when the crontab expression matches, in `timezone`.

    Raises:
        ValueError: the expression is not a valid 5-field crontab expression (the message says
            which field and why).
    """
    from apscheduler.triggers.cron import CronTrigger

    fields = cron_fields(expression)
    for name, value in fields.items():  # one at a time, so the message can name the field
        try:
            CronTrigger(**{name: value}, timezone=timezone)
        except ValueError as exc:
            raise ValueError(f"{name.replace('_', ' ')} field: {exc}") from None
    return CronTrigger(**fields, timezone=timezone, jitter=jitter_seconds or None)


def describe_cron(trigger: CronTrigger) -> str:
    """`cron 17 4 * * *`: the five crontab fields of a trigger (weekdays as names)."""
    by_name = {field.name: str(field) for field in trigger.fields}
    return "cron " + " ".join(by_name[name] for name in FIELDS)
