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

from forecaster.config.settings import check_cron

_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: index 0 (and 7) is Sunday


def _cron_days(field: str) -> set[int]:
    """The cron weekdays (0 = Sunday .. 6) a day-of-week field selects."""
    days: set[int] = set()
    for part in field.lower().split(","):
        rng, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if rng == "*":
            lo, hi = 0, 6
        else:
            bounds = [_DAY_NAMES.index(b) if b in _DAY_NAMES else int(b) for b in rng.split("-")]
            lo = bounds[0]
            hi = bounds[1] if len(bounds) == 2 else (7 if step_text else lo)  # "1/2" means 1-7/2
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return days


def weekday_field(field: str) -> str:
    """A cron day-of-week field rewritten as APScheduler weekday names (``*`` for every day)."""
    days = _cron_days(field)
    if len(days) == 7:
        return "*"
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def cron_trigger(expr: str, *, timezone: dt.tzinfo = dt.timezone.utc) -> BaseTrigger:
    """A trigger that fires exactly when cron would fire ``expr`` (in ``timezone``, UTC by default).

    Raises:
        ValueError: ``expr`` is not a valid five-field expression, naming the bad field.
    """
    minute, hour, dom, month, dow = check_cron(expr).split()
    weekdays = weekday_field(dow)

    def make(day: str, day_of_week: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month, day_of_week=day_of_week,
                           timezone=timezone)

    if not dom.startswith("*") and not dow.startswith("*"):
        # cron: "at 03:00 on the 1st, and on every Monday": either field matching is
        # enough when both are restricted (a field starting with * is not restricted)
        return OrTrigger([make(dom, "*"), make("*", weekdays)])
    return make(dom, weekdays)
