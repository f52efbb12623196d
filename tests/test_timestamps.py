"""The one text form of a timestamp, and every place that writes one."""

from __future__ import annotations

import datetime as dt

import peewee as pw
import pytest
from hypothesis import given
from hypothesis import strategies as st

from txm.client import format_sample
from txm.db.samples import SampleStore
from txm.export.ranges import parse_datetime
from txm.loggernet import records
from txm.timestamps import format_timestamp
from txm.ttp.parser import parse_samples, parse_timestamp

YEAR_999 = dt.datetime(999, 1, 2, 3, 4, 5)


def test_zero_padded_with_microseconds_only_when_present():
    assert format_timestamp(dt.datetime(2009, 1, 6, 5, 3, 4)) == "2009-01-06 05:03:04"
    assert format_timestamp(dt.datetime(2009, 1, 6, 5, 3, 4, 100000)) == "2009-01-06 05:03:04.100000"
    assert format_timestamp(dt.datetime(2009, 1, 6, 5, 3, 4, 1)) == "2009-01-06 05:03:04.000001"
    assert format_timestamp(YEAR_999) == "0999-01-02 03:04:05"
    assert format_timestamp(dt.datetime(1, 1, 1)) == "0001-01-01 00:00:00"


def test_a_time_zone_is_not_written():
    aware = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert format_timestamp(aware) == "2026-01-02 03:04:05.000006"


@given(st.datetimes())
def test_the_form_is_str_of_the_datetime_and_reads_back_everywhere(value):
    text = format_timestamp(value)
    assert text == str(value)  # also the text SQLite keeps
    assert dt.datetime.fromisoformat(text) == value
    assert parse_timestamp(text) == value  # what a meter may send back
    assert parse_datetime(text) == value  # the web pages' and the API's dates
    assert records.parse_timestamp(records.format_timestamp(value)) == value


def test_the_ttp_client_writes_the_one_form():
    assert format_sample(YEAR_999, [1.0, 2.5]) == "<0999-01-02 03:04:05;1;2.5>"
    assert format_sample(dt.datetime(2026, 1, 2, 3, 4, 5, 250000), [7]) == "<2026-01-02 03:04:05.250000;7>"


def test_loggernet_records_trim_the_fraction():
    assert records.format_timestamp(dt.datetime(2026, 1, 2, 3, 4, 5, 250000)) == "2026-01-02 03:04:05.25"
    assert records.format_timestamp(YEAR_999) == "0999-01-02 03:04:05"


@pytest.mark.parametrize("sent", [
    "2009-01-16 15:30:45", "2009-01-16 15:30:45.100000", "2009-01-16 15:30:45.000000", "2009-1-16 15:30:45",
    "09-01-16 15:30:45", " 209-01-16 15:30:45", "2009-01-16 15:30:45.1",
    "0999-01-16 15:30:45", "2009-01-16 15:30:45 ",
])
def test_the_sample_store_keeps_the_one_form_on_sqlite_whatever_was_sent(sent):
    (timestamp,) = [s.timestamp for s in parse_samples(f"<{sent};1>", 1)]
    sqlite, server = SampleStore(pw.SqliteDatabase(None)), SampleStore(pw.PostgresqlDatabase(None))
    assert sqlite.db_timestamps([timestamp], [sent]) == [format_timestamp(timestamp)]
    assert sqlite.db_timestamps([timestamp, timestamp], [sent, "2009-01-16 15:30:45"])[0] == format_timestamp(timestamp)
    assert sqlite.db_timestamps([timestamp]) == [format_timestamp(timestamp)]
    assert server.db_timestamps([timestamp], [sent]) == [timestamp]


def test_the_sample_store_never_keeps_other_digits_as_sent():
    """TTP reads ASCII digits only (tests/ttp/test_strict_input.py); should a text with other
    digits reach the store all the same, it writes the one form, not the text."""
    timestamp = dt.datetime(2009, 1, 16, 15, 30, 45)
    sqlite = SampleStore(pw.SqliteDatabase(None))
    sent = "\u0662\u0660\u0660\u0669-01-16 15:30:45"
    assert sqlite.db_timestamps([timestamp], [sent]) == [format_timestamp(timestamp)]
    assert sqlite.db_timestamps([timestamp, timestamp], [sent, "2009-01-16 15:30:45"])[0] == format_timestamp(timestamp)
