"""Reading samples for people: date ranges with presets, statistics per channel, lines for graphs
reduced to a number of points, the newest sample, and pages of samples for the JSON API.

The web interface's routes are thin over these functions. Every query runs on the unique
``(unit_id, timestamp)`` index and computes in SQL what SQL can (counts, extremes, sums), so a
range of millions of samples is never loaded into memory. SQL is written with plain DB-API
cursors (as :mod:`txm.export` does) and works on SQLite, PostgreSQL and MariaDB/MySQL.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import peewee as pw

from txm.db import schema
from txm.db.dialect import Dialect
from txm.db.samples import newest_sample

#: On SQLite, lines reduced to at most this many buckets are read with one range query per bucket
#: (no sorting; see :func:`_sqlite_bucket_rows`); more buckets (MAX_PLOT_POINTS above twice this)
#: cost more in queries than the GROUP BY's sort, and take the GROUP BY.
SQLITE_RANGE_BUCKETS = 10_000
_EPOCH = dt.datetime(1970, 1, 1)
#: With MAX_PLOT_POINTS 0, a line still has at most this many points per pixel of graph width:
#: more cannot be seen, and a browser chokes on an SVG with millions of points.
POINTS_PER_PIXEL = 4


# --- SQL helpers ----------------------------------------------------------------------------------


def _value(value: Any) -> float | None:
    """A stored channel value as a number people are shown: None for no value, and for a
    non-finite one (an infinity the LoggerNet client stored from ``INF`` before it stored no value
    instead), which JSON cannot carry and a graph cannot draw."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fetchall(db: pw.Database, sql: str, params: Sequence[Any]) -> list[tuple]:
    cursor = db.cursor()
    cursor.execute(sql, list(params))
    return cursor.fetchall()


# --- statistics and lines for graphs ------------------------------------------------------------


@dataclass
class ChannelStats:
    """Statistics of one channel over a range; values None when the channel has no value there."""

    channel: int
    label: str
    count: int = 0
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    stddev: float | None = None  # sample standard deviation (n - 1); None below two values
    first: dt.datetime | None = None
    last: dt.datetime | None = None


@dataclass
class RangeStats:
    count: int  # samples in the range
    first: dt.datetime | None
    last: dt.datetime | None
    channels: list[ChannelStats] = field(default_factory=list)


@dataclass
class Series:
    """Points per channel for a graph: ``lines[channel] = [(timestamp, value), ...]``; a value of
    None is a gap in the line (samples without a value for the channel)."""

    lines: dict[int, list[tuple[dt.datetime, float | None]]]
    total: int  # samples in the range
    reduced: bool  # True when lines hold min/max per time bucket instead of every sample
    limit: int  # the most points a line may have


def plot_limit(max_plot_points: int, graph_width: int) -> int:
    """Points a line may have: MAX_PLOT_POINTS, or (when 0) what the graph's width can show."""
    if max_plot_points > 0:
        return max_plot_points
    return max(2, POINTS_PER_PIXEL * max(graph_width, 100))


def overview(unit: schema.Unit, start: dt.datetime | None, end: dt.datetime | None, limit: int | None = None,
             channels: Sequence[int] | None = None) -> tuple[RangeStats, Series]:
    """Statistics of every channel and (with ``limit``) the graph lines, in one pass over the range.

    Statistics per channel: count, minimum, maximum, mean, standard deviation, first and last
    timestamps. SQLite has no STDDEV, so every engine gets it the same way: from the count, the
    sum and the sum of squares of ``value - K``, where K is the channel's value in the range's
    first sample; shifting by a value near the data keeps the subtraction from cancelling the
    digits that matter (values of 1e6 varying by 1e-3 still come out right).

    Lines: when the range holds at most ``limit`` samples, every sample. Otherwise the time from
    the first to the last sample is cut into ``limit // 2`` equal buckets and each line gets the
    minimum and the maximum of each bucket (at the bucket's first and last sample times):
    peaks and dips stay visible however many samples are folded together. The same aggregate
    per bucket that finds those extremes sums the statistics, so a million samples are read
    once: a GROUP BY on the bucket number, or on SQLite a range query per bucket
    (:func:`_sqlite_bucket_rows`).

    On SQLite the queries run in one read transaction, so every bucket sees the same snapshot
    even while meters upload (in WAL mode a reader never holds up a writer).
    """
    db = schema.database.obj
    if Dialect.of(db).kind == "sqlite":
        with db.atomic():
            return _overview(unit, start, end, limit, channels)
    return _overview(unit, start, end, limit, channels)


def _overview(unit: schema.Unit, start: dt.datetime | None, end: dt.datetime | None, limit: int | None,
              channels: Sequence[int] | None) -> tuple[RangeStats, Series]:
    db = schema.database.obj
    d = Dialect.of(db)
    channels = list(channels or range(1, unit.channels + 1))
    labels = unit.channel_labels()
    where, params = d.samples_where(unit.id, start, end)
    ts = d.ident("timestamp")
    table = d.ident("sample")
    values = d.idents(f"ch{n}" for n in channels)
    lines: dict[int, list[tuple[dt.datetime, float | None]]] = {n: [] for n in channels}
    first_row = _fetchall(db, f"SELECT {ts}, {values} FROM {table} WHERE {where} ORDER BY {ts} LIMIT 1", params)
    if not first_row:
        stats = RangeStats(0, None, None, [ChannelStats(n, labels[n - 1]) for n in channels])
        return stats, Series(lines, 0, False, limit or 0)
    first = Dialect.to_datetime(first_row[0][0])
    last = Dialect.to_datetime(_fetchall(db, f"SELECT {ts} FROM {table} WHERE {where} ORDER BY {ts} DESC LIMIT 1", params)[0][0])
    shift = [float(v) if v is not None else 0.0 for v in first_row[0][1:]]

    parts = [f"MIN({ts})", f"MAX({ts})", "COUNT(*)"]
    select_params: list[Any] = []
    for n, k in zip(channels, shift):
        c = d.ident(f"ch{n}")
        parts += [f"COUNT({c})", f"MIN({c})", f"MAX({c})", f"SUM({c} - {d.param})",
                  f"SUM(({c} - {d.param}) * ({c} - {d.param}))"]
        select_params += [k, k, k]
    buckets = max(1, limit // 2) if limit else 1
    aggregates = ", ".join(parts)
    if buckets > 1 and last > first:
        span = (last - first) // dt.timedelta(microseconds=1) + 1
        width = max(1, -(-span // buckets))  # microseconds per bucket, rounded up
        if d.kind == "sqlite" and buckets <= SQLITE_RANGE_BUCKETS:
            rows = _sqlite_bucket_rows(db, unit, start, end, channels, shift, first, width, buckets)
        else:
            # Offsets are never negative, so SQLite's integer division rounds down as FLOOR does.
            bucket = (f"{d.micros_since(d.param)} / {d.param}" if d.kind == "sqlite"
                      else f"FLOOR({d.micros_since(d.param)} / {d.param})")
            origin = (first - _EPOCH) // dt.timedelta(microseconds=1) if d.kind == "sqlite" else d.stamp(first)
            query = f"SELECT {aggregates}, {bucket} AS b FROM {table} WHERE {where} GROUP BY b ORDER BY b"
            rows = _fetchall(db, query, [*select_params, origin, width, *params])
    else:
        rows = _fetchall(db, f"SELECT {aggregates} FROM {table} WHERE {where}", [*select_params, *params])

    total = sum(int(row[2] or 0) for row in rows)
    stats = RangeStats(total, first, last)
    for i, n in enumerate(channels):
        cells = [row[3 + 5 * i: 8 + 5 * i] for row in rows]
        channel = ChannelStats(n, labels[n - 1], sum(int(c[0] or 0) for c in cells))
        if channel.count:
            present = [c for c in cells if c[0]]
            channel.minimum = min(float(c[1]) for c in present)
            channel.maximum = max(float(c[2]) for c in present)
            s1 = sum(float(c[3]) for c in present)
            s2 = sum(float(c[4]) for c in present)
            channel.mean = shift[i] + s1 / channel.count
            if channel.count >= 2:
                variance = (s2 - s1 * s1 / channel.count) / (channel.count - 1)
                channel.stddev = math.sqrt(max(variance, 0.0))
            if channel.count == total:
                channel.first, channel.last = first, last
            else:  # a channel with gaps: seek its first and last value on the index
                c = d.ident(f"ch{n}")
                for attr, order in (("first", "ASC"), ("last", "DESC")):
                    found = _fetchall(db, f"SELECT {ts} FROM {table} WHERE {where} AND {c} IS NOT NULL "
                                          f"ORDER BY {ts} {order} LIMIT 1", params)
                    setattr(channel, attr, Dialect.to_datetime(found[0][0]))
        stats.channels.append(channel)

    if not limit:
        return stats, Series(lines, total, False, 0)
    # Samples without a value for a channel make one gap (a None point) in its line, never a
    # line drawn across them.
    if total <= limit:
        for row in _fetchall(db, f"SELECT {ts}, {values} FROM {table} WHERE {where} ORDER BY {ts}", params):
            when = Dialect.to_datetime(row[0])
            for n, value in zip(channels, row[1:]):
                _add_point(lines[n], when, _value(value))
        return stats, Series(_trimmed(lines), total, False, limit)
    for row in rows:
        t_first, t_last = Dialect.to_datetime(row[0]), Dialect.to_datetime(row[1])
        for i, n in enumerate(channels):
            low, high = _value(row[4 + 5 * i]), _value(row[5 + 5 * i])
            if low is None or high is None:  # no value in the bucket (or none that is finite)
                _add_point(lines[n], t_first, None)
                continue
            lines[n].append((t_first, low))
            if t_last != t_first:
                lines[n].append((t_last, high))
    return stats, Series(_trimmed(lines), total, True, limit)


def _add_point(line: list[tuple[dt.datetime, float | None]], when: dt.datetime, value: float | None) -> None:
    """A point, or a gap: one None point stands for a run of samples without a value."""
    if value is not None or (line and line[-1][1] is not None):
        line.append((when, value))


def _trimmed(lines: dict[int, list[tuple[dt.datetime, float | None]]]) -> dict[int, list[tuple[dt.datetime, float | None]]]:
    """The lines without a gap at their end, which draws nothing."""
    for line in lines.values():
        if line and line[-1][1] is None:
            line.pop()
    return lines


def _sqlite_bucket_rows(db: pw.Database, unit: schema.Unit, start: dt.datetime | None, end: dt.datetime | None,
                        channels: Sequence[int], shift: Sequence[float], first: dt.datetime, width: int,
                        buckets: int) -> list[tuple]:
    """On SQLite, the rows :func:`overview`'s GROUP BY gives on the other engines: for each bucket
    ``first + k * width <= timestamp < first + (k + 1) * width`` (microseconds) that holds
    samples, its first and last timestamps, its count and each channel's count, minimum, maximum
    and shifted sums.

    SQLite runs a GROUP BY on a computed bucket through a temporary B-tree, sorting every row of
    the range; a range query per bucket instead reads the rows in the order of the
    ``(unit_id, timestamp)`` index and sorts nothing (half the time for a million samples). Its
    first and last timestamps are two seeks on the index rather than a MIN and a MAX over the
    rows, and the bounds are exact microseconds, as on the other engines.
    """
    d = Dialect.of(db)
    ts, table = d.ident("timestamp"), d.ident("sample")
    within = f"{d.ident('unit_id')} = ?1 AND {ts} >= ?2 AND {ts} < ?3"
    parts = [f"(SELECT MIN({ts}) FROM {table} WHERE {within})", f"(SELECT MAX({ts}) FROM {table} WHERE {within})",
             "COUNT(*)"]
    for i, n in enumerate(channels, start=4):
        c = d.ident(f"ch{n}")
        parts += [f"COUNT({c})", f"MIN({c})", f"MAX({c})", f"SUM({c} - ?{i})", f"SUM(({c} - ?{i}) * ({c} - ?{i}))"]
    query = f"SELECT {', '.join(parts)} FROM {table} WHERE {within}"
    step = dt.timedelta(microseconds=width)
    cursor = db.cursor()
    rows = []
    low = first
    for k in range(1, buckets + 1):
        high = first + step * k
        lo = low if start is None or low > start else start
        hi = high if end is None or high < end else end
        low = high
        if lo >= hi:
            continue
        cursor.execute(query, [unit.id, d.stamp(lo), d.stamp(hi), *shift])
        row = cursor.fetchone()
        if row is not None and row[2]:
            rows.append(row)
    return rows


def channel_stats(unit: schema.Unit, start: dt.datetime | None, end: dt.datetime | None,
                  channels: Sequence[int] | None = None) -> RangeStats:
    """The statistics part of :func:`overview`."""
    return overview(unit, start, end, None, channels)[0]


def series(unit: schema.Unit, start: dt.datetime | None, end: dt.datetime | None, channels: Sequence[int],
           limit: int) -> Series:
    """The lines part of :func:`overview`, each with at most ``limit`` points."""
    return overview(unit, start, end, limit, channels)[1]


# --- the newest sample and pages of samples --------------------------------------------------------


@dataclass
class LastSample:
    timestamp: dt.datetime
    received: dt.datetime  # server time (UTC) it arrived
    values: list[float | None]  # every channel, in order


def last_sample(unit: schema.Unit) -> LastSample | None:
    """The unit's sample with the newest timestamp (:func:`txm.db.samples.newest_sample`), or None
    when it has none."""
    sample = newest_sample(unit)
    if sample is None:
        return None
    return LastSample(sample.timestamp, sample.received, [_value(v) for v in sample.values])


def is_stale(sample: LastSample | None, stale_seconds: float, now: dt.datetime | None = None) -> bool:
    """True when the unit has no sample or its newest arrived longer ago than ``stale_seconds``."""
    if sample is None:
        return True
    now = now or schema.utcnow()
    return (now - sample.received).total_seconds() > stale_seconds


def samples_page(unit: schema.Unit, start: dt.datetime | None, end: dt.datetime | None, channels: Sequence[int],
                 after: dt.datetime | None = None, limit: int = 1000) -> list[tuple]:
    """Up to ``limit`` samples ``(timestamp, value, ...)`` in timestamp order, after ``after``
    (exclusive; keyset paging on the unique index, so every page costs the same)."""
    db = schema.database.obj
    d = Dialect.of(db)
    where, params = d.samples_where(unit.id, start, end)
    ts = d.ident("timestamp")
    if after is not None:
        where += f" AND {ts} > {d.param}"
        params.append(d.stamp(after))
    columns = d.idents(f"ch{n}" for n in channels)
    rows = _fetchall(db, f"SELECT {ts}, {columns} FROM {d.ident('sample')} WHERE {where} ORDER BY {ts} "
                     f"LIMIT {int(limit)}", params)
    return [(Dialect.to_datetime(row[0]), *map(_value, row[1:])) for row in rows]


def check_channels(unit: schema.Unit, channels: Sequence[int]) -> list[int]:
    """Channel numbers that exist on the unit, in order, without repeats."""
    seen: list[int] = []
    for n in channels:
        if isinstance(n, int) and 1 <= n <= unit.channels and n not in seen:
            seen.append(n)
    return seen
