"""Five-field crontab expressions: checked, split into fields, and expanded to the values they select.

    check_cron(expr) -> str                  # the expression normalised, or ValueError naming the bad field
    parse_cron(expr) -> CronFields           # the same check, the five fields kept apart
    expand_field(text, index) -> set[int]    # the values a checked field selects
    weekdays(text) -> set[int]               # the days a checked day-of-week field selects (0 = Sunday .. 6)

The config checks expressions with these; the scheduler (jobs/cron.py) maps the
fields to triggers, so both read an expression the same way.
"""

from __future__ import annotations

from typing import NamedTuple

_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")  # cron numbering: index 0 (and 7) is Sunday


class CronField(NamedTuple):
    """One position of a crontab line: its name in messages, its range and the names it accepts."""

    name: str
    lo: int
    hi: int
    names: dict[str, int]


CRON_FIELDS = (
    CronField("minute", 0, 59, {}),
    CronField("hour", 0, 23, {}),
    CronField("day of month", 1, 31, {}),
    CronField("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    CronField("day of week", 0, 7, {d: i for i, d in enumerate(DAY_NAMES)}),
)
DAY_OF_MONTH, MONTH, DAY_OF_WEEK = 2, 3, 4  # indexes into CRON_FIELDS

MONTH_DAYS = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}


class CronFields(NamedTuple):
    """A checked expression, field by field, as written."""

    minute: str
    hour: str
    day: str
    month: str
    day_of_week: str


def parse_cron(expr: str) -> CronFields:
    """Check a five-field crontab expression and split it into its fields.

    Raises:
        ValueError: naming the field and the part that is wrong.
    """
    fields = expr.split()
    if len(fields) != 5:
        raise ValueError(f"needs 5 fields (minute hour day month weekday), got {len(fields)}")
    for text, field in zip(fields, CRON_FIELDS, strict=True):
        _check_field(text, field)
    parsed = CronFields(*fields)
    if not parsed.day.startswith("*") and parsed.day_of_week.startswith("*"):
        days, months = expand_field(parsed.day, DAY_OF_MONTH), expand_field(parsed.month, MONTH)
        if not any(d <= MONTH_DAYS[m] for m in months for d in days):
            raise ValueError(f"never fires: day of month {parsed.day!r} does not occur in month {parsed.month!r}")
    return parsed


def check_cron(expr: str) -> str:
    """Validate a five-field crontab expression; return it normalised (single spaces).

    Raises:
        ValueError: naming the field and the part that is wrong.
    """
    return " ".join(parse_cron(expr))


def _check_field(text: str, field: CronField) -> None:
    name, lo, hi, names = field
    for part in text.lower().split(","):
        rng, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(f"{name} step {step!r} is not a positive number")
        if rng == "*":
            continue
        bounds = rng.split("-")
        if len(bounds) > 2 or not all(bounds):
            raise ValueError(f"{name} {part!r} is not a value, range or step")
        values = []
        for b in bounds:
            if b in names:
                values.append(names[b])
            elif b.isdigit() and lo <= int(b) <= hi:
                values.append(int(b))
            else:
                raise ValueError(f"{name} {b!r} is outside {lo}-{hi}")
        if len(values) == 2 and values[0] > values[1]:
            raise ValueError(f"{name} range {rng!r} runs backwards")


def expand_field(text: str, index: int) -> set[int]:
    """The values a checked field selects; ``index`` is its position (0 = minute .. 4 = day of week).

    A single value with a step runs to the end of the range, as in cron: '1/2' is '1-hi/2'.
    """
    _, lo, hi, names = CRON_FIELDS[index]
    out: set[int] = set()
    for part in text.lower().split(","):
        rng, _, step = part.partition("/")
        if rng == "*":
            first, last = lo, hi
        else:
            bounds = [names[b] if b in names else int(b) for b in rng.split("-")]
            first, last = bounds[0], bounds[-1]
            if step and len(bounds) == 1:
                last = hi
        out.update(range(first, last + 1, int(step or 1)))
    return out


def weekdays(text: str) -> set[int]:
    """The days a checked day-of-week field selects, 0 = Sunday .. 6 (cron's 7 is Sunday too)."""
    return {d % 7 for d in expand_field(text, DAY_OF_WEEK)}
