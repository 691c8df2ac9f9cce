"""Standard crontab expressions read as cron itself reads them, in the configured timezone."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from d3_item_salvager.crontab import cron_trigger, describe_cron

BERLIN = ZoneInfo("Europe/Berlin")
# A Monday, 10:00 in Berlin.
MONDAY = datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)


def fires(expression: str, count: int, after: datetime = MONDAY) -> list[datetime]:
    trigger = cron_trigger(expression, BERLIN)
    times: list[datetime] = []
    previous = None
    now = after
    for _ in range(count):
        fire = trigger.get_next_fire_time(previous, now)
        assert fire is not None
        times.append(fire)
        previous = now = fire
    return times


@pytest.mark.parametrize(
    ("expression", "first"),
    [
        ("17 4 * * *", datetime(2026, 3, 3, 4, 17, tzinfo=BERLIN)),
        ("*/15 * * * *", datetime(2026, 3, 2, 10, 0, tzinfo=BERLIN)),
        ("0 4 1 * *", datetime(2026, 4, 1, 4, 0, tzinfo=BERLIN)),
        ("30 6 * jan-jun *", datetime(2026, 3, 3, 6, 30, tzinfo=BERLIN)),
    ],
)
def test_first_fire_time_in_the_timezone(expression: str, first: datetime) -> None:
    """The first fire time at or after a moment is cron's, in the configured timezone."""
    assert fires(expression, 1) == [first]


@pytest.mark.parametrize(
    ("weekday_field", "weekdays"),
    [
        # Python's weekday(): Monday is 0, Sunday 6. Cron's: Sunday is 0 (and 7).
        ("0", {6}),
        ("7", {6}),
        ("sun", {6}),
        ("1-5", {0, 1, 2, 3, 4}),
        ("mon-fri", {0, 1, 2, 3, 4}),
        ("*/2", {6, 1, 3, 5}),  # Sunday, Tuesday, Thursday, Saturday
        ("0,6", {5, 6}),
        ("5-7", {4, 5, 6}),
    ],
)
def test_weekday_numbers_are_crons_own(weekday_field: str, weekdays: set[int]) -> None:
    """Weekday numbers mean what they mean to cron (0 is Sunday), not APScheduler's Monday."""
    days = fires(f"0 4 * * {weekday_field}", 14)
    assert {day.weekday() for day in days} == weekdays
    assert all((day.hour, day.minute) == (4, 0) for day in days)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("61 * * * *", "minute field"),
        ("0 24 * * *", "hour field"),
        ("0 0 32 * *", "day field"),
        ("0 0 * 13 *", "month field"),
        ("0 0 * * 8", "weekday '8'"),
        ("0 0 * * 5-1", "runs backwards"),
        ("0 0 * *", "needs 5 fields"),
        ("@daily", "needs 5 fields"),
        ("0 0 13 * 5", "not both"),
    ],
)
def test_bad_expressions_are_refused_with_the_reason(expression: str, message: str) -> None:
    """An invalid expression, or one cron would read differently, raises a ValueError saying why."""
    with pytest.raises(ValueError, match=message):
        cron_trigger(expression)


def test_jitter_delays_each_fire_by_at_most_its_seconds() -> None:
    """With jitter, each fire comes 0..jitter seconds after the crontab time."""
    trigger = cron_trigger("0 * * * *", BERLIN, jitter_seconds=30)
    assert trigger.jitter == 30
    for hour in range(20):
        now = MONDAY + timedelta(hours=hour, minutes=1)
        exact = now.replace(minute=0) + timedelta(hours=1)
        fire = trigger.get_next_fire_time(None, now)
        assert fire is not None
        assert exact <= fire <= exact + timedelta(seconds=30)


def test_describe_shows_the_five_fields() -> None:
    """The description names the five fields, weekdays by name."""
    assert describe_cron(cron_trigger("17 4 * * 1-3")) == "cron 17 4 * * mon,tue,wed"
