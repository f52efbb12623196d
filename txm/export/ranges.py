"""Dates and ranges as people write them: ``2026-01-31``, ``2026-01-31 12:00``, ``today``, the
presets of the unit page (``day``: the last day of data), and the ranges they make.

The CSV export, the web interface and the JSON API read dates through here, so all of them
accept the same forms and mean the same range.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from txm.db import schema
from txm.db.samples import newest_sample
from txm.errors import InvalidValue
from txm.timestamps import format_timestamp

#: Date range presets: name -> (label, length); counted back from the unit's newest sample.
PRESETS: dict[str, tuple[str, dt.timedelta | None]] = {
    "hour": ("Last hour", dt.timedelta(hours=1)),
    "day": ("Last day", dt.timedelta(days=1)),
    "week": ("Last week", dt.timedelta(days=7)),
    "month": ("Last month", dt.timedelta(days=30)),
    "all": ("All", None),
}
DEFAULT_PRESET = "day"
_DATE_RE = re.compile(
    r"^(?P<date>\d{4}-\d{1,2}-\d{1,2})"
    r"(?:[ T](?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2})(?:\.(?P<f>\d{1,6}))?)?)?$")


def parse_datetime(text: str, *, end: bool = False, what: str = "date") -> dt.datetime:
    """A start (``end`` false) or end bound from a person's text, as a naive datetime.

    Accepted: ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM``, ``YYYY-MM-DD HH:MM:SS[.ffffff]`` (a ``T``
    may stand for the space, as HTML date inputs send), ``today`` and ``yesterday``.
    Times are the meters' clock time, like the samples' timestamps.

    A start is the first instant of what it names. An end is returned as an *exclusive* bound
    just past what it names, so ``--to 2026-01-31`` takes the whole of that day and
    ``--to "2026-01-31 12:30"`` the whole of that minute.
    """
    raw = (text or "").strip()
    low = raw.lower()
    if low in ("today", "yesterday"):
        day = dt.date.today() - dt.timedelta(days=1 if low == "yesterday" else 0)
        start = dt.datetime(day.year, day.month, day.day)
        return start + dt.timedelta(days=1) if end else start
    match = _DATE_RE.match(raw)
    if not match:
        raise InvalidValue(f"{what} {text!r} is not a date: write YYYY-MM-DD, 'YYYY-MM-DD HH:MM' or "
                           f"'YYYY-MM-DD HH:MM:SS', or today or yesterday")
    try:
        year, month, day = (int(part) for part in match["date"].split("-"))
        hour = int(match["h"] or 0)
        minute = int(match["m"] or 0)
        second = int(match["s"] or 0)
        micro = int((match["f"] or "0").ljust(6, "0"))
        value = dt.datetime(year, month, day, hour, minute, second, micro)
    except ValueError as exc:
        raise InvalidValue(f"{what} {text!r} is not a real date or time: {exc}") from None
    if not end:
        return value
    if match["h"] is None:
        step = dt.timedelta(days=1)
    elif match["s"] is None:
        step = dt.timedelta(minutes=1)
    elif match["f"] is None:
        step = dt.timedelta(seconds=1)
    else:
        step = dt.timedelta(microseconds=10 ** (6 - len(match["f"])))
    try:
        return value + step
    except OverflowError:
        return dt.datetime.max


def parse_range(start: str | dt.datetime | None, end: str | dt.datetime | None
                ) -> tuple[dt.datetime | None, dt.datetime | None]:
    """``(start, end)`` with start inclusive and end exclusive, from text or datetimes.

    A datetime given as ``end`` is taken as an exclusive bound as it is. A start after the
    end is an :class:`InvalidValue`.
    """
    lo = start if isinstance(start, dt.datetime) or start is None else parse_datetime(start, what="start date")
    hi = end if isinstance(end, dt.datetime) or end is None else parse_datetime(end, end=True, what="end date")
    if lo is not None and hi is not None and lo >= hi:
        raise InvalidValue(f"the start ({format_timestamp(lo)}) is not before the end "
                           f"({format_timestamp(hi)}); nothing lies between them")
    return lo, hi


@dataclass(frozen=True)
class DateRange:
    """Samples with ``start <= timestamp < end``; None leaves that side open."""

    start: dt.datetime | None
    end: dt.datetime | None
    preset: str | None  # the preset chosen, or None for dates given
    label: str


def resolve_range(unit: schema.Unit, preset: str | None = None, start: str | None = None,
                  end: str | None = None) -> DateRange:
    """The range a person asked for: dates (``from``/``to``, see :func:`txm.export.parse_datetime`)
    when either is given, else a preset (default: the last day).

    Presets count back from the unit's newest sample, not from the server's clock: meters keep
    their own clock (often local time), and "the last day" of a meter that stopped a week ago
    should still show its last day of data. Bad dates or an unknown preset raise
    :class:`InvalidValue` with a message for the page.
    """
    start = (start or "").strip() or None
    end = (end or "").strip() or None
    if start or end:
        lo, hi = parse_range(start, end)
        label = (f"{format_timestamp(lo) if lo else 'the first sample'} to "
                 f"{'before ' + format_timestamp(hi) if hi else 'the newest sample'}")
        return DateRange(lo, hi, None, label)
    preset = (preset or DEFAULT_PRESET).strip().lower()
    if preset not in PRESETS:
        raise InvalidValue(f"unknown range {preset!r}: choose one of {', '.join(PRESETS)}")
    label, length = PRESETS[preset]
    if length is None:
        return DateRange(None, None, preset, "all samples")
    newest = newest_sample(unit)
    if newest is None:
        return DateRange(None, None, preset, label.lower())
    hi = newest.timestamp + dt.timedelta(microseconds=1)
    return DateRange(hi - length, hi, preset, f"{label.lower()} of data, to {format_timestamp(newest.timestamp)}")
