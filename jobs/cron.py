"""Five-field crontab expressions as APScheduler 3 triggers, with crontab's meaning.

APScheduler 3's ``CronTrigger.from_crontab`` differs from cron in two ways that
would silently move jobs: it numbers weekdays from Monday (cron: 0 and 7 are
Sunday), and when both day-of-month and day-of-week are restricted it needs
both to match (cron: either). ``cron_trigger`` translates the weekday field to
names and turns the either-case into an ``OrTrigger``.
"""

from __future__ import annotations

import datetime as dt

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from forecaster.calendar.cron import DAY_NAMES, parse_cron, weekdays


def weekday_field(field: str) -> str:
    """A cron day-of-week field rewritten as APScheduler weekday names (``*`` for every day)."""
    days = weekdays(field)
    if len(days) == 7:
        return "*"
    return ",".join(DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expr: str, *, timezone: dt.tzinfo = dt.UTC) -> BaseTrigger:
    """A trigger that fires exactly when cron would fire ``expr`` (in ``timezone``, UTC by default).

    Raises:
        ValueError: ``expr`` is not a valid five-field expression, naming the bad field.
    """
    minute, hour, dom, month, dow = parse_cron(expr)
    day_names = weekday_field(dow)

    def make(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                           timezone=timezone)

    if not dom.startswith("*") and not dow.startswith("*"):
        # cron: "at 03:00 on the 1st, and on every Monday": either field matching is
        # enough when both are restricted (a field starting with * is not restricted)
        return OrTrigger([make(dom, "*"), make("*", day_names)])
    return make(dom, day_names)
