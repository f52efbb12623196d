"""txm.data on every backend: ranges and presets, statistics in SQL, reduced lines, newest samples."""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pytest

from txm import data
from txm import db as m
from txm.errors import InvalidValue

BASE = dt.datetime(2026, 3, 1, 12, 0, 0)


def _unit(code="M1", channels=2, **fields) -> m.Unit:
    return m.Unit.create(code=code, key="k", channels=channels, **fields)


def _samples(unit: m.Unit, rows) -> None:
    """rows: (timestamp, [values])"""
    batch = []
    for when, values in rows:
        row = {"unit": unit.id, "timestamp": when, "received": m.utcnow()}
        row.update({f"ch{i + 1}": v for i, v in enumerate(values)})
        batch.append(row)
    with m.database.atomic():
        for i in range(0, len(batch), 500):
            m.Sample.insert_many(batch[i:i + 500]).execute()


def test_presets_count_back_from_the_newest_sample(database):
    unit = _unit()
    _samples(unit, [(BASE - dt.timedelta(days=3), [1, 1]), (BASE, [2, 2])])
    day = data.resolve_range(unit, "day")
    assert (day.start, day.end) == (BASE - dt.timedelta(days=1) + dt.timedelta(microseconds=1),
                                    BASE + dt.timedelta(microseconds=1))
    assert day.preset == "day"
    assert data.resolve_range(unit).preset == data.DEFAULT_PRESET
    everything = data.resolve_range(unit, "all")
    assert (everything.start, everything.end) == (None, None)
    assert data.channel_stats(unit, day.start, day.end).count == 1
    assert data.channel_stats(unit, everything.start, everything.end).count == 2


def test_dates_win_over_presets_and_bad_ones_say_why(database):
    unit = _unit()
    chosen = data.resolve_range(unit, "hour", "2026-03-01", "2026-03-01")
    assert (chosen.start, chosen.end, chosen.preset) == (dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 2), None)
    with pytest.raises(InvalidValue, match="not a date"):
        data.resolve_range(unit, None, "yesterday-ish", None)
    with pytest.raises(InvalidValue, match="not a real date"):
        data.resolve_range(unit, None, "2026-02-30", None)
    with pytest.raises(InvalidValue, match="not before the end"):
        data.resolve_range(unit, None, "2026-03-02", "2026-03-01")
    with pytest.raises(InvalidValue, match="unknown range"):
        data.resolve_range(unit, "fortnight")


def test_statistics_match_python_on_every_backend(database):
    unit = _unit(channels=3, labels=["Flow", "", "Big"])
    rows = []
    for i in range(500):
        flow = math.sin(i / 7) * 10 + 3
        other = None if i % 5 == 0 else float(i)
        big = 1e6 + (i % 10) * 1e-3  # large values varying a little: cancellation would ruin this
        rows.append((BASE + dt.timedelta(seconds=i, microseconds=i % 3), [flow, other, big]))
    _samples(unit, rows)
    stats = data.channel_stats(unit, None, None)
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
    _samples(unit, [(BASE, [5.0, None]), (BASE + dt.timedelta(hours=1), [7.0, None])])
    stats = data.channel_stats(unit, BASE, BASE + dt.timedelta(minutes=1))
    one, empty = stats.channels
    assert (one.count, one.minimum, one.maximum, one.mean, one.stddev) == (1, 5.0, 5.0, 5.0, None)
    assert (empty.count, empty.minimum, empty.first) == (0, None, None)
    nothing = data.channel_stats(unit, BASE - dt.timedelta(days=2), BASE - dt.timedelta(days=1))
    assert nothing.count == 0 and nothing.first is None and nothing.channels[0].mean is None


def test_series_unreduced_when_it_fits(database):
    unit = _unit(channels=2)
    rows = [(BASE + dt.timedelta(seconds=i), [float(i), None if i == 3 else -i]) for i in range(10)]
    _samples(unit, rows)
    s = data.series(unit, None, None, [1, 2], limit=10)
    assert not s.reduced and s.total == 10
    assert s.lines[1] == [(r[0], r[1][0]) for r in rows]
    assert len(s.lines[2]) == 9  # the missing value is left out


def test_reduced_series_keeps_every_peak_and_respects_the_limit(database):
    unit = _unit(channels=1)
    spikes = {1234: 1000.0, 5678: -1000.0, 9999: 500.0}
    rows = [(BASE + dt.timedelta(seconds=i), [spikes.get(i, math.sin(i / 50))]) for i in range(10_000)]
    _samples(unit, rows)
    s = data.series(unit, None, None, [1], limit=200)
    assert s.reduced and s.total == 10_000
    line = s.lines[1]
    assert len(line) <= 200
    values = [v for _, v in line]
    assert max(values) == 1000.0 and min(values) == -1000.0 and 500.0 in values
    assert [t for t, _ in line] == sorted(t for t, _ in line)
    assert line[0][0] == rows[0][0] and line[-1][0] == rows[-1][0]  # the line spans the whole range


def test_plot_limit(database):
    assert data.plot_limit(500, 800) == 500
    assert data.plot_limit(0, 800) == 800 * data.POINTS_PER_PIXEL


def test_last_sample_stale_and_pages(database):
    unit = _unit(channels=2)
    assert data.last_sample(unit) is None and data.is_stale(None, 60)
    rows = [(BASE + dt.timedelta(seconds=i), [float(i), float(-i)]) for i in range(25)]
    _samples(unit, rows)
    last = data.last_sample(unit)
    assert last.timestamp == rows[-1][0] and last.values == [24.0, -24.0]
    assert not data.is_stale(last, 60)
    assert data.is_stale(last, 60, now=last.received + dt.timedelta(seconds=61))
    page1 = data.samples_page(unit, None, None, [2], limit=10)
    page2 = data.samples_page(unit, None, None, [2], after=page1[-1][0], limit=10)
    page3 = data.samples_page(unit, None, None, [2], after=page2[-1][0], limit=10)
    assert [r[1] for r in page1 + page2 + page3] == [float(-i) for i in range(25)]
    assert len(page3) == 5


def test_statistics_are_the_same_when_the_lines_are_reduced(database):
    unit = _unit(channels=2)
    rows = [(BASE + dt.timedelta(seconds=i * 7), [math.cos(i) * 100, None if i < 40 or i > 900 else i / 3])
            for i in range(1000)]
    _samples(unit, rows)
    plain = data.channel_stats(unit, None, None)
    stats, lines = data.overview(unit, None, None, limit=60)
    assert lines.reduced and all(len(line) <= 60 for line in lines.lines.values())
    for a, b in zip(plain.channels, stats.channels):
        assert (a.count, a.minimum, a.maximum, a.first, a.last) == (b.count, b.minimum, b.maximum, b.first, b.last)
        assert a.mean == pytest.approx(b.mean, rel=1e-12) and a.stddev == pytest.approx(b.stddev, rel=1e-9)
    gappy = stats.channels[1]
    assert (gappy.first, gappy.last) == (rows[40][0], rows[900][0])
