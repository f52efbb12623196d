"""txm.export.stats and txm.export.ranges on every backend: ranges and presets, statistics in SQL,
reduced lines, newest samples."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pytest

from tests.webutil import store_samples
from txm.db import schema
from txm.errors import InvalidValue
from txm.export import stats
from txm.export.ranges import DEFAULT_PRESET, resolve_range
from txm.export.stats import (
    POINTS_PER_PIXEL,
    SQLITE_RANGE_BUCKETS,
    channel_stats,
    is_stale,
    last_sample,
    overview,
    plot_limit,
    samples_page,
)

BASE = dt.datetime(2026, 3, 1, 12, 0, 0)


def _unit(code="M1", channels=2, **fields) -> schema.Unit:
    return schema.Unit.create(code=code, key="k", channels=channels, **fields)


def test_presets_count_back_from_the_newest_sample(database):
    unit = _unit()
    store_samples(unit, [(BASE - dt.timedelta(days=3), [1, 1]), (BASE, [2, 2])])
    day = resolve_range(unit, "day")
    assert (day.start, day.end) == (BASE - dt.timedelta(days=1) + dt.timedelta(microseconds=1),
                                    BASE + dt.timedelta(microseconds=1))
    assert day.preset == "day"
    assert resolve_range(unit).preset == DEFAULT_PRESET
    everything = resolve_range(unit, "all")
    assert (everything.start, everything.end) == (None, None)
    assert channel_stats(unit, day.start, day.end).count == 1
    assert channel_stats(unit, everything.start, everything.end).count == 2


def test_dates_win_over_presets_and_bad_ones_say_why(database):
    unit = _unit()
    chosen = resolve_range(unit, "hour", "2026-03-01", "2026-03-01")
    assert (chosen.start, chosen.end, chosen.preset) == (dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2), None)
    with pytest.raises(InvalidValue, match="not a date"):
        resolve_range(unit, None, "yesterday-ish", None)
    with pytest.raises(InvalidValue, match="not a real date"):
        resolve_range(unit, None, "2026-02-30", None)
    with pytest.raises(InvalidValue, match="not before the end"):
        resolve_range(unit, None, "2026-03-02", "2026-03-01")
    with pytest.raises(InvalidValue, match="unknown range"):
        resolve_range(unit, "fortnight")


def test_statistics_match_python_on_every_backend(database):
    unit = _unit(channels=3, labels=["Flow", "", "Big"])
    rows = []
    for i in range(500):
        flow = math.sin(i / 7) * 10 + 3
        other = None if i % 5 == 0 else float(i)
        big = 1e6 + (i % 10) * 1e-3  # large values varying a little: cancellation would ruin this
        rows.append((BASE + dt.timedelta(seconds=i, microseconds=i % 3), [flow, other, big]))
    store_samples(unit, rows)
    stats = channel_stats(unit, None, None)
    assert stats.count == 500 and stats.first == rows[0][0] and stats.last == rows[-1][0]
    for n, c in enumerate(stats.channels, start=1):
        values = [r[1][n - 1] for r in rows if r[1][n - 1] is not None]
        stamps = [r[0] for r in rows if r[1][n - 1] is not None]
        assert c.channel == n and c.count == len(values)
        assert c.label == ["Flow", "ch2", "Big"][n - 1]
        assert c.minimum == pytest.approx(min(values)) and c.maximum == pytest.approx(max(values))
        assert c.mean == pytest.approx(statistics.fmean(values), rel=1e-12)
        assert c.stddev == pytest.approx(statistics.stdev(values), rel=1e-6)
        assert (c.first, c.last) == (stamps[0], stamps[-1])


def test_statistics_of_a_range_one_value_and_nothing(database):
    unit = _unit(channels=2)
    store_samples(unit, [(BASE, [5.0, None]), (BASE + dt.timedelta(hours=1), [7.0, None])])
    stats = channel_stats(unit, BASE, BASE + dt.timedelta(minutes=1))
    one, empty = stats.channels
    assert (one.count, one.minimum, one.maximum, one.mean, one.stddev) == (1, 5.0, 5.0, 5.0, None)
    assert (empty.count, empty.minimum, empty.first) == (0, None, None)
    nothing = channel_stats(unit, BASE - dt.timedelta(days=2), BASE - dt.timedelta(days=1))
    assert nothing.count == 0 and nothing.first is None and nothing.channels[0].mean is None


def test_series_unreduced_when_it_fits(database):
    unit = _unit(channels=2)
    rows = [(BASE + dt.timedelta(seconds=i), [float(i), None if i == 3 else -i]) for i in range(10)]
    store_samples(unit, rows)
    s = stats.series(unit, None, None, [1, 2], limit=10)
    assert not s.reduced and s.total == 10
    assert s.lines[1] == [(r[0], r[1][0]) for r in rows]
    assert s.lines[2] == [(r[0], r[1][1]) for r in rows]  # the missing value is a gap: (time, None)


@pytest.mark.backends("sqlite", "postgresql")  # MariaDB cannot store an infinity
def test_non_finite_values_stored_by_an_older_client_read_as_no_value(database, settings):
    """The LoggerNet client once stored INF as an infinity: pages, API and lines read no value."""
    unit = _unit(channels=2)
    inf = float("inf")
    rows = [(BASE, [1.0, 1.0]), (BASE + dt.timedelta(seconds=1), [inf, 2.0]),
            (BASE + dt.timedelta(seconds=2), [3.0, -inf])]
    store_samples(unit, rows)
    assert [r[1:] for r in samples_page(unit, None, None, [1, 2])] == [(1.0, 1.0), (None, 2.0), (3.0, None)]
    assert last_sample(unit).values == [3.0, None]
    series = stats.series(unit, None, None, [1, 2], limit=10)
    assert series.lines[1] == [(BASE, 1.0), (rows[1][0], None), (rows[2][0], 3.0)]
    assert series.lines[2] == [(BASE, 1.0), (rows[1][0], 2.0)]


def test_reduced_series_keeps_every_peak_and_respects_the_limit(database):
    unit = _unit(channels=1)
    spikes = {1234: 1000.0, 5678: -1000.0, 9999: 500.0}
    rows = [(BASE + dt.timedelta(seconds=i), [spikes.get(i, math.sin(i / 50))]) for i in range(10_000)]
    store_samples(unit, rows)
    s = stats.series(unit, None, None, [1], limit=200)
    assert s.reduced and s.total == 10_000
    line = s.lines[1]
    assert len(line) <= 200
    values = [v for _, v in line]
    assert max(values) == 1000.0 and min(values) == -1000.0 and 500.0 in values
    assert [t for t, _ in line] == sorted(t for t, _ in line)
    assert line[0][0] == rows[0][0] and line[-1][0] == rows[-1][0]  # the line spans the whole range


def test_plot_limit(database):
    assert plot_limit(500, 800) == 500
    assert plot_limit(0, 800) == 800 * POINTS_PER_PIXEL


def test_last_sample_stale_and_pages(database):
    unit = _unit(channels=2)
    assert last_sample(unit) is None and is_stale(None, 60)
    rows = [(BASE + dt.timedelta(seconds=i), [float(i), float(-i)]) for i in range(25)]
    store_samples(unit, rows)
    last = last_sample(unit)
    assert last.timestamp == rows[-1][0] and last.values == [24.0, -24.0]
    assert not is_stale(last, 60)
    assert is_stale(last, 60, now=last.received + dt.timedelta(seconds=61))
    page1 = samples_page(unit, None, None, [2], limit=10)
    page2 = samples_page(unit, None, None, [2], after=page1[-1][0], limit=10)
    page3 = samples_page(unit, None, None, [2], after=page2[-1][0], limit=10)
    assert [r[1] for r in page1 + page2 + page3] == [float(-i) for i in range(25)]
    assert len(page3) == 5


def test_statistics_are_the_same_when_the_lines_are_reduced(database):
    unit = _unit(channels=2)
    rows = [(BASE + dt.timedelta(seconds=i * 7), [math.cos(i) * 100, None if i < 40 or i > 900 else i / 3])
            for i in range(1000)]
    store_samples(unit, rows)
    plain = channel_stats(unit, None, None)
    stats, lines = overview(unit, None, None, limit=60)
    assert lines.reduced and all(len(line) <= 60 for line in lines.lines.values())
    for a, b in zip(plain.channels, stats.channels):
        assert (a.count, a.minimum, a.maximum, a.first, a.last) == (b.count, b.minimum, b.maximum, b.first, b.last)
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.stddev == pytest.approx(b.stddev, rel=1e-9)
    gappy = stats.channels[1]
    assert (gappy.first, gappy.last) == (rows[40][0], rows[900][0])


def _reference(rows, start, end, limit):
    """overview() done the plain way in Python over the same samples: statistics of every value in
    the range, and (when the range holds more than ``limit`` samples) per bucket of
    ``ceil(span / (limit // 2))`` microseconds from the first sample, each channel's minimum at the
    bucket's first sample time and its maximum at the bucket's last."""
    inside = sorted((t, v) for t, v in rows if (start is None or t >= start) and (end is None or t < end))
    channels = len(rows[0][1])
    stats = []
    for n in range(channels):
        present = [(t, v[n]) for t, v in inside if v[n] is not None]
        values = [v for _, v in present]
        stats.append((len(values), min(values, default=None), max(values, default=None),
                      statistics.fmean(values) if values else None,
                      statistics.stdev(values) if len(values) > 1 else None,
                      present[0][0] if present else None, present[-1][0] if present else None))
    if len(inside) <= limit:
        lines = {n + 1: _gapped([(t, v[n]) for t, v in inside]) for n in range(channels)}
        return len(inside), stats, lines, False
    first, last = inside[0][0], inside[-1][0]
    micro = dt.timedelta(microseconds=1)
    width = -(-((last - first) // micro + 1) // (limit // 2))
    buckets: dict[int, list] = {}
    for t, v in inside:
        buckets.setdefault((t - first) // micro // width, []).append((t, v))
    points: dict[int, list] = {n + 1: [] for n in range(channels)}
    for key in sorted(buckets):
        members = buckets[key]
        t_first, t_last = members[0][0], members[-1][0]
        for n in range(channels):
            values = [v[n] for _, v in members if v[n] is not None]
            if not values:  # samples, none with a value: a gap
                points[n + 1].append((t_first, None))
                continue
            points[n + 1].append((t_first, min(values)))
            if t_last != t_first:
                points[n + 1].append((t_last, max(values)))
    return len(inside), stats, {n: _gapped(line) for n, line in points.items()}, True


def _gapped(points: list) -> list:
    """A line as a graph gets it: where values are missing, one None point (a gap) at the first
    of them, after a value; nothing at the start or the end."""
    line: list = []
    for t, v in points:
        if v is not None or (line and line[-1][1] is not None):
            line.append((t, v))
    if line and line[-1][1] is None:
        line.pop()
    return line


def _check_against_reference(unit, rows, start, end, limit):
    total, expected, lines, reduced = _reference(rows, start, end, limit)
    stats, series = overview(unit, start, end, limit)
    assert (stats.count, series.total, series.reduced) == (total, total, reduced)
    for got, (count, low, high, mean, stdev, first, last) in zip(stats.channels, expected):
        assert (got.count, got.minimum, got.maximum, got.first, got.last) == (count, low, high, first, last)
        assert got.mean == (None if mean is None else pytest.approx(mean, rel=1e-12))
        assert got.stddev == (None if stdev is None else pytest.approx(stdev, rel=1e-9))
    assert series.lines == lines  # every bucket's extremes, exactly, at the same times


def test_reduced_lines_and_statistics_equal_a_plain_python_computation(database):
    """Buckets of exactly one second (10 s of samples, limit 20 -> 10 buckets): samples on a
    bucket's first microsecond and on its last, a peak and a dip in every bucket, gaps of whole
    empty buckets, a channel missing values (in whole buckets too) and ranges cut anywhere."""
    unit = _unit(channels=3)
    rows = []
    for second in range(10):
        if second in (4, 5):  # a gap: two buckets without samples
            continue
        at = BASE + dt.timedelta(seconds=second)
        offsets = [0, 1, 137_000, 500_000, 731_003, 999_998, 999_999]
        for j, micro in enumerate(offsets):
            peak = second * 10.0 + 100.0 if j == 1 + second % 2 else None
            dip = -second * 10.0 - 100.0 if j == 4 + second % 3 else None
            wave = math.sin(second * 7 + j) + 2.0
            ch2 = None if second == 7 or j == 3 else float(second * 7 + j)
            rows.append((at + dt.timedelta(microseconds=micro), [peak or dip or wave, ch2, 1e6 + j * 1e-3]))
    store_samples(unit, rows)
    assert rows[-1][0] - rows[0][0] == dt.timedelta(seconds=10) - dt.timedelta(microseconds=1)
    s = BASE + dt.timedelta(seconds=2, microseconds=1)
    e = BASE + dt.timedelta(seconds=8, microseconds=999_999)
    for start, end in ((None, None), (s, None), (None, e), (s, e)):
        for limit in (20, 7, 2, 3, 1000):
            _check_against_reference(unit, rows, start, end, limit)
    stats, series = overview(unit, None, None, 20)
    assert series.reduced and all(len(line) <= 20 for line in series.lines.values())
    values = [v for _, v in series.lines[1]]
    assert None in [v for _, v in series.lines[2]]  # second 7 has no value for ch2: a gap, not a line across
    for second in set(range(10)) - {4, 5}:  # every bucket's peak and dip are on the line
        assert second * 10.0 + 100.0 in values and -second * 10.0 - 100.0 in values


@pytest.mark.parametrize("range_buckets", [SQLITE_RANGE_BUCKETS, 0], ids=["range-queries", "group-by"])
def test_both_ways_of_reading_buckets_give_the_plain_python_result(database, monkeypatch, range_buckets):
    """SQLite reads up to SQLITE_RANGE_BUCKETS buckets with a range query each, more with one
    GROUP BY: both give the reference result, to the microsecond (the other engines always group)."""
    monkeypatch.setattr(stats, "SQLITE_RANGE_BUCKETS", range_buckets)
    unit = _unit(channels=2)
    rows = []
    for i in range(400):  # 4 s; buckets of 0.2 s with limit 40: samples on bucket edges and 1 us off
        micro = [0, 1, 199_999, 200_000, 200_001, 399_999, 555_555, 800_000][i % 8]
        when = BASE + dt.timedelta(seconds=i // 100, microseconds=micro + (i // 8 % 12) * 7)
        rows.append((when, [math.cos(i) * (1000.0 if i % 37 == 0 else 1.0), None if i % 3 else float(i)]))
    rows = sorted(dict(rows).items())
    rows[-1] = (rows[0][0] + dt.timedelta(seconds=4) - dt.timedelta(microseconds=1), rows[-1][1])
    store_samples(unit, rows)
    for start, end in ((None, None), (rows[5][0], rows[-20][0])):
        for limit in (40, 9, 100):
            _check_against_reference(unit, rows, start, end, limit)


def test_a_range_with_one_sample_and_samples_beyond_its_end(database):
    unit = _unit(channels=2)
    rows = [(BASE + dt.timedelta(seconds=i, microseconds=i * 3), [float(i % 4), None if i % 2 else -float(i)])
            for i in range(50)]
    store_samples(unit, rows)
    one_start, one_end = rows[10][0], rows[11][0]
    _check_against_reference(unit, rows, one_start, one_end, 4)
    stats, series = overview(unit, one_start, one_end, 4)
    assert stats.count == 1 and stats.channels[0].stddev is None and series.lines[1] == [(rows[10][0], 2.0)]
    # the last bucket reaches past the range's end, where more samples lie: they stay out
    _check_against_reference(unit, rows, rows[3][0], rows[40][0] + dt.timedelta(microseconds=1), 10)
    _check_against_reference(unit, rows, None, rows[47][0], 6)
