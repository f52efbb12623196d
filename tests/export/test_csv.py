"""The CSV core (txm.export.csv): fields, header, dates, and the streaming query on every backend."""

from __future__ import annotations

import csv
import datetime as dt
import io
import time

import peewee as pw
import pytest

from tests.samples import store_samples
from txm import manage
from txm.db import schema
from txm.errors import InvalidValue, NotFound
from txm.export import csv as csv_export
from txm.export.csv import UnitExport, csv_text, header, resolve_fields, settled_last_id
from txm.export.ranges import parse_datetime, parse_range


def unit_object(code="M1", channels=3, labels=("Flow", "Level"), report_fields=()):
    return schema.Unit(code=code, key="k", channels=channels, labels=list(labels),
                       report_fields=list(report_fields))


# --- fields --------------------------------------------------------------------------------------


def test_fields_default_to_the_units_report_options_else_every_channel():
    assert resolve_fields(unit_object()) == [1, 2, 3]
    assert resolve_fields(unit_object(report_fields=[3, 1])) == [3, 1]
    assert resolve_fields(unit_object(report_fields=[3, 1]), "all") == [1, 2, 3]
    assert resolve_fields(unit_object(report_fields=[3, 1]), "2") == [2]
    # a stored choice naming a channel the unit no longer has is left out
    assert resolve_fields(unit_object(report_fields=[9, 2])) == [2]


@pytest.mark.parametrize("spec, expected", [
    ("1,3", [1, 3]), ("3,1", [3, 1]), ("2-3", [2, 3]), ("Level,Flow", [2, 1]), ("level", [2]),
    ("ch3,1", [3, 1]), ([3, "Flow"], [3, 1]), (" 1 , 2 ", [1, 2]),
])
def test_fields_by_number_range_and_label(spec, expected):
    assert resolve_fields(unit_object(), spec) == expected


@pytest.mark.parametrize("spec, words", [
    ("4", "no field 4"), ("0", "no field 0"), ("Pressure", "no field 'Pressure'"), ("1,,2", "empty entry"),
    ("1,Flow", "given twice"), ("3-1", "backwards"), ("2-5", "no field 4"),
])
def test_a_bad_field_is_a_clear_error(spec, words):
    with pytest.raises(InvalidValue, match=words) as info:
        resolve_fields(unit_object(), spec)
    assert "Flow, Level, ch3" in str(info.value) or "twice" in words or "backwards" in words


def test_header_names_columns_with_the_channel_labels():
    assert header(unit_object(), [1, 2, 3]) == ["timestamp", "Flow", "Level", "ch3"]
    assert header(unit_object(), [3, 1]) == ["timestamp", "ch3", "Flow"]


# --- dates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, start, end", [
    ("2026-01-31", dt.datetime(2026, 1, 31), dt.datetime(2026, 2, 1)),
    ("2026-1-5", dt.datetime(2026, 1, 5), dt.datetime(2026, 1, 6)),
    ("2026-01-31 12:30", dt.datetime(2026, 1, 31, 12, 30), dt.datetime(2026, 1, 31, 12, 31)),
    ("2026-01-31T12:30", dt.datetime(2026, 1, 31, 12, 30), dt.datetime(2026, 1, 31, 12, 31)),
    ("2026-01-31 12:30:15", dt.datetime(2026, 1, 31, 12, 30, 15), dt.datetime(2026, 1, 31, 12, 30, 16)),
    ("2026-01-31 12:30:15.25", dt.datetime(2026, 1, 31, 12, 30, 15, 250000),
     dt.datetime(2026, 1, 31, 12, 30, 15, 260000)),
    ("2026-12-31 23:59:59", dt.datetime(2026, 12, 31, 23, 59, 59), dt.datetime(2027, 1, 1)),
])
def test_dates_name_a_start_and_an_exclusive_end(text, start, end):
    assert parse_datetime(text) == start
    assert parse_datetime(text, end=True) == end


def test_today_and_yesterday():
    today = dt.datetime.combine(dt.date.today(), dt.time())
    assert parse_datetime("today") == today
    assert parse_datetime("Yesterday", end=True) == today


@pytest.mark.parametrize("text, words", [
    ("2026-02-30", "not a real date"), ("2026-01-01 25:00", "not a real date"), ("31/01/2026", "not a date"),
    ("2026-01-01Z", "not a date"), ("", "not a date"), ("2026-01-01 12", "not a date"),
])
def test_a_bad_date_is_a_clear_error(text, words):
    with pytest.raises(InvalidValue, match=words):
        parse_datetime(text, what="--from")


def test_a_range_must_not_be_empty():
    assert parse_range("2026-01-01", "2026-01-01") == (dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))
    with pytest.raises(InvalidValue, match="not before the end"):
        parse_range("2026-01-02", "2026-01-01")
    assert parse_range(None, None) == (None, None)


# --- the query, on every backend -------------------------------------------------------------------


@pytest.fixture
def unit_m1(database):
    return manage.add_unit("M1", "k", 3, labels="Flow,Level")


def read_csv(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_csv_pages_stream_every_sample_in_timestamp_order(database, unit_m1):
    base = dt.datetime(2026, 1, 1)
    samples = [(base + dt.timedelta(seconds=i), [i * 1.5, -i, None if i % 2 else 0.1]) for i in range(25)]
    samples.reverse()  # stored newest first: the export still comes in timestamp order
    store_samples(database, "M1", samples)
    run = UnitExport(database, "M1", page_size=7)
    pieces = list(run.csv_pages())
    assert len(pieces) == 1 + 4  # the header, then pages of 7, 7, 7, 4
    text = "".join(pieces)
    assert text.startswith("timestamp,Flow,Level,ch3\r\n2026-01-01 00:00:00,0.0,0.0,0.1\r\n")
    rows = read_csv(text)
    assert len(rows) == 26 and run.count == 25
    assert rows[2] == ["2026-01-01 00:00:01", "1.5", "-1.0", ""]
    assert rows[-1] == ["2026-01-01 00:00:24", "36.0", "-24.0", "0.1"]
    assert [r[0] for r in rows[1:]] == sorted(r[0] for r in rows[1:])


def test_fractional_seconds_and_exact_values(database, unit_m1):
    when = dt.datetime(2026, 3, 4, 5, 6, 7, 123400)
    store_samples(database, "M1", [(when, [0.1, 1e20, -2.5e-300]),
                                   (dt.datetime(2026, 3, 4, 5, 6, 8), [1 / 3, 7.0, 12345678.9])])
    rows = read_csv("".join(UnitExport(database, "M1").csv_pages()))
    assert rows[1] == ["2026-03-04 05:06:07.123400", "0.1", "1e+20", "-2.5e-300"]
    assert rows[2] == ["2026-03-04 05:06:08", repr(1 / 3), "7.0", "12345678.9"]
    typed = list(UnitExport(database, "M1", "3,1").rows())
    assert typed == [(when, -2.5e-300, 0.1), (dt.datetime(2026, 3, 4, 5, 6, 8), 12345678.9, 1 / 3)]


def test_a_range_takes_start_through_end_inclusive_at_their_precision(database, unit_m1):
    base = dt.datetime(2026, 1, 31, 23, 59, 58)
    store_samples(database, "M1", [(base + dt.timedelta(seconds=i), [i, 0, 0]) for i in range(5)])
    run = UnitExport(database, "M1", "1", start="2026-01-31 23:59:59", end="2026-01-31")
    assert [r[1] for r in run.rows()] == [1.0]
    run = UnitExport(database, "M1", "1", start="2026-02-01", end="2026-02-01 00:00:01")
    assert [r[1] for r in run.rows()] == [2.0, 3.0]
    assert run.total() == 2


def test_only_the_units_own_samples(database, unit_m1):
    manage.add_unit("M2", "k", 1)
    store_samples(database, "M2", [(dt.datetime(2026, 1, 1), [99.0])])
    store_samples(database, "M1", [(dt.datetime(2026, 1, 2), [1.0, 2.0, 3.0])])
    assert [r[1:] for r in UnitExport(database, "M1").rows()] == [(1.0, 2.0, 3.0)]
    assert UnitExport(database, "M2").total() == 1


def test_incremental_export_takes_ids_after_the_cursor_in_id_order(database, unit_m1):
    store_samples(database, "M1", [(dt.datetime(2026, 1, 2), [2, 0, 0]), (dt.datetime(2026, 1, 3), [3, 0, 0])])
    first = UnitExport(database, "M1", "1", after_id=0)
    assert [r[1] for r in first.rows()] == [2.0, 3.0]
    # a back-filled sample: older timestamp, newer id
    store_samples(database, "M1", [(dt.datetime(2026, 1, 1), [1, 0, 0])])
    second = UnitExport(database, "M1", "1", after_id=first.last_id)
    assert [r[1] for r in second.rows()] == [1.0]
    assert second.last_id > first.last_id


def test_settled_last_id_takes_every_committed_sample_at_once_when_no_transaction_is_open(database, unit_m1):
    """No guess of seconds: a sample committed just now is final when nothing else is open
    (tests/export/test_horizon.py has the writers that hold their transactions open)."""
    store_samples(database, "M1", [(dt.datetime(2026, 1, 1), [1, 0, 0])])
    first = schema.Sample.select(pw.fn.MAX(schema.Sample.id)).scalar()
    assert settled_last_id(database, 0) == first
    store_samples(database, "M1", [(dt.datetime(2026, 1, 2), [2, 0, 0])])  # received now
    newest = schema.Sample.select(pw.fn.MAX(schema.Sample.id)).scalar()
    # (MariaDB's list of transactions is refreshed once nobody has read it for 0.1 s: a look just
    # after another may not count, and the next one does)
    started = time.monotonic()
    assert csv_export.wait_settled(database, first, timeout=10) == newest > first
    assert time.monotonic() - started < 2
    assert settled_last_id(database, newest + 3) == newest + 3  # never behind the caller's cursor


def test_library_helpers_use_the_bound_database(database, unit_m1):
    store_samples(database, "M1", [(dt.datetime(2026, 1, 1), [1, 2, 3])])
    assert list(csv_export.rows("M1", "2")) == [(dt.datetime(2026, 1, 1), 2.0)]
    assert "".join(csv_text("M1", "Level", with_header=False)) == "2026-01-01 00:00:00,2.0\r\n"
    with pytest.raises(NotFound, match="no unit with code 'M9'"):
        csv_export.rows("M9")
