"""LoggerNet Data Export records: the grammar's examples byte for byte, both formats' quoting and
escapes, 1,000-field records, fractional seconds, acknowledgements, and malformed input."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from txm.loggernet import records as r

RTMS_EXAMPLE = (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),Battery_V FLOAT,Temp FLOAT) "
                b"VALUES ('1993-12-08 15:02:00',123456,13.5,72.123)\r\n")
STANDARD_EXAMPLE = (b'"Lgr","Sec15","1993-12-08 15:02:00","123456","Battery_V","FLOAT","13.5",'
                    b'"Temp","FLOAT","72.123"\r\n')
ACK_EXAMPLE = b"Lgr,Sec15,123456\r\n"
EXAMPLE = r.Record("Lgr", "Sec15", "1993-12-08 15:02:00", 123456,
                   (r.Field("Battery_V", "FLOAT", "13.5"), r.Field("Temp", "FLOAT", "72.123")))


def test_the_grammar_examples_byte_for_byte():
    assert r.parse_rtms(RTMS_EXAMPLE) == EXAMPLE
    assert r.parse_standard(STANDARD_EXAMPLE) == EXAMPLE
    assert r.format_rtms(EXAMPLE) == RTMS_EXAMPLE
    assert r.format_standard(EXAMPLE) == STANDARD_EXAMPLE
    assert r.format_ack(EXAMPLE) == ACK_EXAMPLE == EXAMPLE.ack().encode()
    assert r.parse_ack(ACK_EXAMPLE) == r.Ack("Lgr", "Sec15", 123456)
    assert EXAMPLE.time() == dt.datetime(1993, 12, 8, 15, 2)
    assert [f.number() for f in EXAMPLE.fields] == [13.5, 72.123]


def test_records_without_their_crlf_parse_the_same():
    assert r.parse_rtms(RTMS_EXAMPLE[:-2]) == r.parse_rtms(RTMS_EXAMPLE.decode()) == EXAMPLE
    assert r.parse_standard(STANDARD_EXAMPLE[:-2]) == EXAMPLE


def test_standard_quoting_and_backslash_escapes():
    record = r.Record("St_1", "Tab", "2026-01-02 03:04:05", 7,
                      (r.Field("Note", "VARCHAR(40)", 'say "hi" \\ bye, ok'), r.Field("V", "FLOAT", "-1.5e-07")))
    line = r.format_standard(record)
    assert line == (b'"St_1","Tab","2026-01-02 03:04:05","7","Note","VARCHAR(40)","say \\"hi\\" \\\\ bye, ok",'
                    b'"V","FLOAT","-1.5e-07"\r\n')
    assert r.parse_standard(line) == record


def test_rtms_quoting_and_escapes():
    record = r.Record("St_1", "Tab", "2026-01-02 03:04:05", 7,
                      (r.Field("Note", "VARCHAR(40)", "it's a \\ path, (really)"), r.Field("N", "INTEGER", "-3"),
                       r.Field("D", "DECIMAL(8,2)", "12.50")))
    line = r.format_rtms(record)
    assert line == (b"St_1,Tab (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),Note VARCHAR(40),N INTEGER,D DECIMAL(8,2)) "
                    b"VALUES ('2026-01-02 03:04:05',7,'it\\'s a \\\\ path, (really)',-3,12.50)\r\n")
    assert r.parse_rtms(line) == record
    # the SQL form of a quote inside a string is read too
    sql_form = line.replace(b"it\\'s", b"it''s")
    assert r.parse_rtms(sql_form) == record


def test_fractional_seconds_any_number_of_digits():
    record = r.Record("L", "T", "2026-01-02 03:04:05.25", 1, (r.Field("V", "FLOAT", "1.0"),))
    for fmt in r.FORMATS:
        assert r.parse_record(r.format_record(record, fmt), fmt) == record
    assert record.time() == dt.datetime(2026, 1, 2, 3, 4, 5, 250000)
    assert r.parse_timestamp("2026-01-02 03:04:05.123456789") == dt.datetime(2026, 1, 2, 3, 4, 5, 123456)
    assert r.format_timestamp(dt.datetime(2026, 1, 2, 3, 4, 5, 250000)) == "2026-01-02 03:04:05.25"
    assert r.format_timestamp(dt.datetime(2026, 1, 2, 3, 4, 5)) == "2026-01-02 03:04:05"
    assert r.format_timestamp(dt.datetime(2026, 1, 2, 3, 4, 5, 1)) == "2026-01-02 03:04:05.000001"


@pytest.mark.parametrize("fmt", r.FORMATS)
def test_a_thousand_field_record(fmt):
    fields = tuple(r.Field(f"Temp({i})", "FLOAT", repr(i / 3)) for i in range(1, 1001))
    record = r.Record("BigLogger", "Table_1", "2026-06-30 23:59:59.5", 4294967295, fields)
    line = r.format_record(record, fmt)
    assert len(line) > 25_000 and line.endswith(b"\r\n") and line.count(b"\r\n") == 1
    parsed = r.parse_record(line, fmt)
    assert parsed == record and len(parsed.fields) == 1000
    assert parsed.fields[999].number() == 1000 / 3


def test_float_values_and_missing_ones():
    assert r.format_float(13.5) == "13.5" and r.format_float(0.1) == "0.1" and r.format_float(1e22) == "1e+22"
    assert r.format_float(None) == "NAN" and r.format_float(float("nan")) == "NAN"
    assert r.format_float(float("inf")) == "INF" and r.format_float(float("-inf")) == "-INF"
    assert r.Field("V", "FLOAT", "NAN").number() is None and not r.Field("V", "FLOAT", "NAN").over_range
    # over range (INF, -INF, beyond a double) is no measurement either: no value, never a non-finite float
    for text in ("INF", "-INF", "+inf", "1e309", "-1e400", "1" * 400):
        field = r.Field("V", "FLOAT", text)
        assert field.number() is None and field.over_range, text
    assert r.Field("V", "FLOAT", "1e308").number() == 1e308 and not r.Field("V", "FLOAT", "1e308").over_range


def test_the_identity_of_a_record_that_breaks_the_grammar_further_on():
    """Enough of a line to acknowledge it: station, table and record number."""
    for line, fmt in [(b'"Lgr","T","2026-02-30 10:00:00","12","V","FLOAT","high"\r\n', "standard"),
                      (b'"Lgr","T","x","12","V","FLOAT","1","unterminated', "standard"),
                      (b"Lgr,T (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V FLOAT) VALUES ('2026-02-30 10:00:00',12,'x')",
                       "rtms")]:
        with pytest.raises(r.RecordError):
            r.parse_record(line, fmt)
        assert r.read_identity(line, fmt) == r.Ack("Lgr", "T", 12), line
    assert r.read_identity(r.format_standard(EXAMPLE), "standard") == EXAMPLE.ack()
    assert r.read_identity(RTMS_EXAMPLE, "rtms") == EXAMPLE.ack()
    assert r.read_identity(b'"Lgr","T","2026-01-01 00:00:00","1' + b"0" * 30 + b'"', "standard").record_number == 10 ** 30
    for line, fmt in [(b"garbage", "standard"), (b'"Lgr","T","2026-01-01,"1","V"', "standard"),
                      (b'"Lgr","T a","2026-01-01 00:00:00","1"', "standard"), (b'"Lgr","T","x","-1"', "standard"),
                      (b"Lgr,T (V FLOAT) VALUES (1)", "rtms"), (b"Lgr (RECNBR DECIMAL(10,0)) VALUES (1)", "rtms"),
                      (b"garbage", "rtms"), (RTMS_EXAMPLE, "standard")]:
        assert r.read_identity(line, fmt) is None, line
    with pytest.raises(r.RecordError, match="digits"):
        r.parse_ack(b"Lgr,T," + b"9" * 5000)


names = st.text(st.characters(codec="utf-8", exclude_characters=" ,'\"\r\n\t\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0"
                              "\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
                              "\u2028\u2029\u202f\u205f\u3000", exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
strings = st.text(st.characters(codec="utf-8", exclude_characters="\r\n", exclude_categories=("Cs",)), max_size=20)
stamps = st.datetimes(min_value=dt.datetime(1000, 1, 1), max_value=dt.datetime(9999, 12, 31)).map(r.format_timestamp)
numbers = st.floats(allow_nan=False).map(r.format_float)
fields = st.one_of(
    st.builds(r.Field, names, st.just("FLOAT"), numbers),
    st.builds(r.Field, names, st.just("INTEGER"), st.integers(-2**63, 2**63).map(str)),
    st.builds(r.Field, names, st.just("VARCHAR(64)"), strings),
    st.builds(r.Field, names, st.just("TIMESTAMP"), stamps),
)
records = st.builds(r.Record, names, names, stamps, st.integers(0, 2**63), st.lists(fields, max_size=8).map(tuple))


@hsettings(max_examples=300, deadline=None)
@given(records, st.sampled_from(r.FORMATS))
def test_round_trip_property(record, fmt):
    if fmt == "rtms":
        # the RTMS timestamp and record number travel as the fields TMSTAMP and RECNBR
        record = r.Record(record.station, record.table, record.timestamp, record.record_number,
                          tuple(f for f in record.fields if f.name not in (r.RTMS_TIMESTAMP, r.RTMS_RECORD)))
    line = r.format_record(record, fmt)
    assert line.endswith(b"\r\n") and b"\r" not in line[:-2] and b"\n" not in line[:-2]
    assert r.parse_record(line, fmt) == record
    assert r.parse_ack(r.format_ack(record)) == record.ack()


@pytest.mark.parametrize("line, words", [
    (b'"Lgr","Sec15","1993-12-08 15:02:00"\r\n', "4 header items"),
    (b'"Lgr","Sec15","1993-12-08 15:02:00","12","V","FLOAT"\r\n', "3 per field"),
    (b'"Lgr","Sec15","1993-12-08 15:02:00","12","V","FLOAT","1.5\r\n', "no closing double quote"),
    (b'"Lgr","Sec15","1993-12-08 15:02:00","12","V","FLOAT","1\\x5"\r\n', "backslash not followed"),
    (b'"Lgr","Sec15","1993-12-08 15:02:00","12";"V","FLOAT","1.5"\r\n', "expected a comma after item 4"),
    (b'Lgr,"Sec15","1993-12-08 15:02:00","12"\r\n', "does not start with a double quote"),
    (b'"Lgr","Sec15","1993-12-08 15:02","12"\r\n', "not YYYY-MM-DD hh:mm:ss"),
    (b'"Lgr","Sec15","1993-02-30 15:02:00","12"\r\n', "not a real time"),
    (b'"Lgr","Sec15","1993-12-08 15:02:00","-12"\r\n', "record number '-12' is not digits"),
    (b'"Lgr","Sec15","1993-12-08 15:02:00","12","V","FLOAT","abc"\r\n', "not a number"),
    (b'"Lgr","Sec15","1993-12-08 15:02:00","12","V","DOUBLE","1"\r\n', "expected TIMESTAMP"),
    (b'"L g","Sec15","1993-12-08 15:02:00","12"\r\n', "station name 'L g'"),
    (b'"Lgr","","1993-12-08 15:02:00","12"\r\n', "table name ''"),
])
def test_malformed_standard_records_say_why(line, words):
    with pytest.raises(r.RecordError, match=words.replace("(", r"\(")):
        r.parse_standard(line)


@pytest.mark.parametrize("line, words", [
    (b"Lgr,Sec15 TMSTAMP TIMESTAMP) VALUES ('1993-12-08 15:02:00')", "table name 'Sec15 TMSTAMP"),
    (b"Lgr,Sec15", "no ' ('"),
    (b"LgrSec15 (TMSTAMP TIMESTAMP) VALUES ('1993-12-08 15:02:00')", "no comma"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP) ('1993-12-08 15:02:00')", "VALUES"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0)) VALUES ('1993-12-08 15:02:00',1", "ends with"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V FLOAT) VALUES ('1993-12-08 15:02:00',1)", "3 fields"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,V FLOAT) VALUES ('1993-12-08 15:02:00',1.5)", "needs the field RECNBR"),
    (b"Lgr,Sec15 (RECNBR DECIMAL(10,0),V FLOAT) VALUES (1,1.5)", "needs the field TMSTAMP"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0)) VALUES (1993-12-08,1)", "must be quoted"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V FLOAT) VALUES ('1993-12-08 15:02:00',1,'1')",
     "must not be quoted"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V VARCHAR(9)) VALUES ('1993-12-08 15:02:00',1,'ab)",
     "no closing quote"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V) VALUES ('1993-12-08 15:02:00',1,2)", "not 'Name TYPE'"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR INTEGER) VALUES ('1993-12-08 15:02:00',1)", "must be DECIMAL"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V FLOAT) VALUES ('1993-12-08 15:02:00',1,)",
     "neither a bare number"),
    (b"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0)) VALUES ('1993-12-08 15:02:00',1)\r\nX", "one line"),
])
def test_malformed_rtms_records_say_why(line, words):
    with pytest.raises(r.RecordError, match=words.replace("(", r"\(")):
        r.parse_rtms(line)


ARABIC_INDIC_12 = "\u0661\u0662"  # 12 in Arabic-Indic digits, which int() and float() would read
FULLWIDTH_1993 = "\uff11\uff19\uff19\uff13"


@pytest.mark.parametrize("line, words", [
    (f'"Lgr","Sec15","1993-12-08 15:02:00","{ARABIC_INDIC_12}"', "record number"),
    (f'"Lgr","Sec15","1993-12-08 15:02:00","12","V","FLOAT","{ARABIC_INDIC_12}"', "not a number"),
    (f'"Lgr","Sec15","{FULLWIDTH_1993}-12-08 15:02:00","12"', "not YYYY-MM-DD"),
    (f'"Lgr","Sec15","1993-12-08 15:02:00","12","V","DECIMAL({ARABIC_INDIC_12},2)","1"', "expected TIMESTAMP"),
])
def test_only_ascii_digits_are_digits_in_standard_records(line, words):
    with pytest.raises(r.RecordError, match=words.replace("(", r"\(")):
        r.parse_standard(line.encode() + b"\r\n")


@pytest.mark.parametrize("line, words", [
    (f"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0)) VALUES ('1993-12-08 15:02:00',{ARABIC_INDIC_12})",
     "record number"),
    (f"Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V FLOAT) VALUES ('1993-12-08 15:02:00',1,{ARABIC_INDIC_12})",
     "not a number"),
])
def test_only_ascii_digits_are_digits_in_rtms_records(line, words):
    with pytest.raises(r.RecordError, match=words):
        r.parse_rtms(line.encode())


@pytest.mark.parametrize("line", [b"Lgr,Sec15\r\n", b"Lgr,Sec15,12a\r\n", b",Sec15,12\r\n", b"\r\n"])
def test_malformed_acknowledgements(line):
    with pytest.raises(r.RecordError):
        r.parse_ack(line)


def test_field_names_from_channel_labels():
    assert r.field_name("Flow") == "Flow"
    assert r.field_name("Flow rate, m3") == "Flow_rate__m3"
    assert r.field_name("") == "_"
