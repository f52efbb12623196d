"""The TTP parser on plain bytes: framing, requests, timestamps, values, replies."""

from __future__ import annotations

import datetime as dt

import peewee as pw
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txm.db.samples import SampleStore
from txm.framing import TOO_LONG, Framer
from txm.timestamps import format_timestamp
from txm.ttp.parser import (
    ProtocolError,
    Request,
    error_reply,
    format_value,
    parse_number,
    parse_request,
    parse_samples,
    parse_timestamp,
)

#: Where uploads are stored as text (the parser's timestamps become the text SQLite keeps).
SQLITE = SampleStore(pw.SqliteDatabase(None))

# --- framing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("terminator", [b"\r", b"\r\n", b"\n"])
def test_each_terminator_ends_a_request(terminator):
    assert Framer(100).feed(b"TTP /dl/M1/last k" + terminator) == [b"TTP /dl/M1/last k"]


def test_several_requests_in_one_packet_mixed_terminators():
    framer = Framer(100)
    assert framer.feed(b"A\rB\r\nC\nD\r") == [b"A", b"B", b"C", b"D"]
    assert not framer.pending


def test_one_request_in_many_packets():
    framer = Framer(100)
    line = b"TTP /up/M1/<2009-1-16 15:30:45;11> key"
    got = []
    for byte in line:
        got += framer.feed(bytes([byte]))
    assert got == [] and framer.pending
    assert framer.feed(b"\r") == [line]
    assert not framer.pending


def test_lf_of_crlf_in_next_packet_is_not_an_empty_request():
    framer = Framer(100)
    assert framer.feed(b"A\r") == [b"A"]
    assert framer.feed(b"\nB\r") == [b"B"]
    assert framer.feed(b"\n") == []
    assert framer.feed(b"C\n") == [b"C"]


def test_blank_lines_are_skipped():
    assert Framer(100).feed(b"\r\r\n\nA\r\r") == [b"A"]


def test_request_longer_than_limit_is_reported_once_then_nothing():
    framer = Framer(10)
    assert framer.feed(b"0123456789\r") == [b"0123456789"]  # exactly the limit is fine
    assert framer.feed(b"0123456789A\rB\r") == [TOO_LONG]
    assert framer.feed(b"C\r") == []


def test_unterminated_request_over_limit_is_too_long():
    framer = Framer(10)
    assert framer.feed(b"01234") == []
    assert framer.feed(b"567890") == [TOO_LONG]


def test_lines_before_an_overlong_one_are_kept():
    assert Framer(5).feed(b"ab\r0123456789\r") == [b"ab", TOO_LONG]


# --- requests ------------------------------------------------------------------------------------


def test_parse_upload_request():
    req = parse_request(b"TTP /up/M1/<2009-1-16 15:30:45;11;22> s3cret")
    assert req == Request("up", "M1", "<2009-1-16 15:30:45;11;22>", "s3cret")


def test_parse_download_request():
    assert parse_request(b"TTP /dl/unit7/last key") == Request("dl", "unit7", "last", "key")


def test_argument_may_hold_slashes_and_spaces():
    assert parse_request(b"TTP /al/M1/<2;a b/c> k").argument == "<2;a b/c>"


def test_describe_never_shows_the_key():
    req = parse_request(b"TTP /dl/M1/last topsecretkey")
    assert "topsecretkey" not in req.describe()


@pytest.mark.parametrize("line", [
    b"", b"GET / HTTP/1.1", b"TTP /dl/M1/last", b"TTP /dl/M1/last ", b"TTP /dl/M1 key",
    b"TTP /dl/M-1/last key", b"TTP //M1/last key", b"TTP /d l/M1/last key", b"TTP /dl//last key",
    b"ttp /dl/M1/last key", b"TTP /dl/M1/last \xff\xfe", b"TTP /dl/" + b"M" * 65 + b"/last key",
])
def test_malformed_requests_are_400(line):
    with pytest.raises(ProtocolError) as info:
        parse_request(line)
    assert info.value.code == 400
    assert info.value.reply() == "400 Bad request"


# --- timestamps ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("2009-1-16 15:30:45", dt.datetime(2009, 1, 16, 15, 30, 45)),
    ("2009-01-16 05:03:04", dt.datetime(2009, 1, 16, 5, 3, 4)),
    ("7-1-16 15:30:45", dt.datetime(2007, 1, 16, 15, 30, 45)),
    ("97-09-12 1:2:3", dt.datetime(2097, 9, 12, 1, 2, 3)),
    ("123-1-1 0:0:0", dt.datetime(2123, 1, 1)),
    ("2009-1-16 15:30:45.1", dt.datetime(2009, 1, 16, 15, 30, 45, 100000)),
    ("2009-1-16 15:30:45.10", dt.datetime(2009, 1, 16, 15, 30, 45, 100000)),
    ("2009-1-16 15:30:45.000123", dt.datetime(2009, 1, 16, 15, 30, 45, 123)),
    ("2008-2-29 23:59:59", dt.datetime(2008, 2, 29, 23, 59, 59)),
])
def test_timestamps_per_the_manual(text, expected):
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", [
    "2009-13-16 15:30:45", "2009-2-30 15:30:45", "2009-2-29 00:00:00", "2009-1-16 24:00:00",
    "2009-1-16 15:60:00", "2009-1-16 15:30:61", "2009-1-0 1:1:1", "0000-1-1 1:1:1",
    "2009-1-16", "2009/1/16 15:30:45", "2009-1-16 15:30:45.1234567", "x", "",
    "20091-1-16 15:30:45", "2009-1-16 15:30:45.", "2009-1-16 15:30",
])
def test_impossible_or_malformed_timestamps_are_400(text):
    with pytest.raises(ProtocolError) as info:
        parse_timestamp(text)
    assert info.value.code == 400


# --- values and samples ----------------------------------------------------------------------------


@pytest.mark.parametrize("text, value", [
    ("11", 11.0), ("-11", -11.0), ("+3", 3.0), ("11.5", 11.5), ("11.", 11.0), (".5", 0.5),
    ("1e3", 1000.0), ("-2.5E-2", -0.025), (" 7 ", 7.0),
])
def test_numbers(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "abc", "nan", "inf", "-inf", "1_000", "0x10", "1e999", "1,5", "1.2.3",
                                  "--1", "e5", "."])
def test_non_numbers_are_400(text):
    with pytest.raises(ProtocolError) as info:
        parse_number(text)
    assert info.value.code == 400


def test_parse_several_samples_keeps_timestamps_as_sent():
    samples = parse_samples("<7-1-16 15:30:45;11;22><2009-1-16 15:30:46.5;-1;2e2>", channels=2)
    assert [s.sent for s in samples] == ["7-1-16 15:30:45", "2009-1-16 15:30:46.5"]
    assert samples[0].timestamp == dt.datetime(2007, 1, 16, 15, 30, 45)
    assert samples[1].values == (-1.0, 200.0)


@pytest.mark.parametrize("argument", [
    "", "last", "<2009-1-16 15:30:45;11>", "<2009-1-16 15:30:45;11;22;33>", "<2009-1-16 15:30:45>",
    "<2009-1-16 15:30:45;11;x>", "<2009-1-16 15:30:45;11;22>junk", "x<2009-1-16 15:30:45;11;22>",
    "<2009-1-16 15:30:45;11;22><2009-2-30 15:30:45;11;22>", "<2009-1-16 15:30:45;11;22", "<<>>",
    "<2009-1-16 15:30:45;11;;22>",
])
def test_bad_uploads_are_400(argument):
    with pytest.raises(ProtocolError) as info:
        parse_samples(argument, channels=2)
    assert info.value.code == 400


# --- replies -------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (11.0, "11"), (11.5, "11.5"), (-3.0, "-3"), (0.0, "0"), (0.1, "0.1"), (1e20, "1e+20"),
    (-0.025, "-0.025"), (123456789.0, "123456789"),
])
def test_values_print_as_meters_expect(value, text):
    assert format_value(value) == text


def test_timestamps_print_zero_padded_with_microseconds_only_when_present():
    assert format_timestamp(dt.datetime(2009, 1, 6, 5, 3, 4)) == "2009-01-06 05:03:04"
    assert format_timestamp(dt.datetime(2009, 1, 6, 5, 3, 4, 100000)) == "2009-01-06 05:03:04.100000"


def test_error_replies():
    assert error_reply(404) == "404 Data Not found"
    assert error_reply(406, "2<2009-1-16 15:30:45>") == "406 Duplicate sample 2<2009-1-16 15:30:45>"
    assert error_reply(501) == "501 Not implemented"


# --- property tests: no input raises anything but the protocol's own error -------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=20), st.integers(min_value=1, max_value=64))
def test_framer_never_fails_and_never_exceeds_limit(chunks, limit):
    framer = Framer(limit)
    for chunk in chunks:
        for line in framer.feed(chunk):
            assert line is TOO_LONG or (0 < len(line) <= limit and b"\r" not in line and b"\n" not in line)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_parse_or_raise_protocol_error(data):
    try:
        req = parse_request(data)
    except ProtocolError as exc:
        assert exc.code == 400
        return
    try:
        parse_samples(req.argument, channels=2)
    except ProtocolError as exc:
        assert exc.code == 400


_ALPHABET = st.sampled_from(list("TP /updl<>;:-.0123456789 eE+-Mkx\r\n"))


@settings(max_examples=300, deadline=None)
@given(st.text(_ALPHABET, max_size=80), st.integers(min_value=1, max_value=4))
def test_near_valid_text_parses_or_raises_protocol_error(text, channels):
    try:
        parse_samples(text, channels)
        req = parse_request(("TTP /up/M1/" + text + " k").encode())
        parse_samples(req.argument, channels)
    except ProtocolError as exc:
        assert exc.code == 400


@settings(max_examples=200, deadline=None)
@given(st.datetimes(min_value=dt.datetime(1000, 1, 1)), st.lists(
    st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=5))
def test_formatted_samples_parse_back(timestamp, values):
    stamp = timestamp.strftime("%Y-%m-%d %H:%M:%S") + (f".{timestamp.microsecond:06d}" if timestamp.microsecond else "")
    sample = parse_samples("<" + ";".join([stamp, *map(format_value, values)]) + ">", len(values))[0]
    assert sample.timestamp == timestamp
    assert sample.values == tuple(values)


@pytest.mark.parametrize("argument", [
    "<2009-1-16 15:30:45;" + "1" * 300_000 + "x>",
    "<2009-1-16 15:30:45;" + "1" * 300_000 + ">",
    "<" + " " * 300_000 + "2009-1-16 15:30:45;1 x>",
    "<2009-1-16 15:30:45;1" + ";1" * 150_000 + "x>",
    "<2009-1-16 15:30:45;1>" * 30_000 + "<",
    "<2009-1-16 15:30:45;1" + " " * 300_000 + "x>",
], ids=["digits-then-junk", "long-number", "spaces", "many-values", "many-samples", "trailing-spaces"])
def test_long_hostile_uploads_are_answered_not_stuck(argument):
    """Patterns are unambiguous, so a long crafted request costs linear time (an alarm guards it)."""
    import signal

    def stuck(signum, frame):
        raise AssertionError("parsing took more than 20 s: catastrophic backtracking")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(20)
    try:
        with pytest.raises(ProtocolError):
            parse_samples(argument, channels=1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("text", ["2020-01-01 1:1:1.12", "2020-1-01 01:01:01", "20-01-01 01:01:01.1234",
                                  "2020-01-01 01:01:01", "2020-01-01 01:01:01.000001", "2020-01-01 01:01:01.5",
                                  "9-1-1 1:1:1.123456", "2020-12-31 23:59:59.999999"])
def test_fast_and_careful_paths_agree(text):
    from txm.ttp.parser import _parse_careful, _parse_fast

    argument = f"<{text};1>"
    assert _parse_fast(argument, 1) == _parse_careful(argument, 1)


@settings(max_examples=300, deadline=None)
@given(st.datetimes(min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2999, 12, 31)),
       st.lists(st.booleans(), min_size=7, max_size=7), st.integers(min_value=0, max_value=6))
def test_fast_path_equals_careful_path_for_any_padding(timestamp, pads, micro_digits):
    from txm.ttp.parser import _parse_careful, _parse_fast

    def part(value, width, pad):
        return f"{value:0{width}d}" if pad else str(value)

    year = part(timestamp.year, 4, True) if pads[0] else str(timestamp.year - 2000)
    text = (f"{year}-{part(timestamp.month, 2, pads[1])}-{part(timestamp.day, 2, pads[2])} "
            f"{part(timestamp.hour, 2, pads[3])}:{part(timestamp.minute, 2, pads[4])}:"
            f"{part(timestamp.second, 2, pads[5])}")
    if micro_digits:
        text += "." + f"{timestamp.microsecond:06d}"[:micro_digits]
    argument = f"<{text};1.5;-2>"
    fast, careful = _parse_fast(argument, 2), _parse_careful(argument, 2)
    assert fast == careful
    assert careful[0].timestamp.replace(microsecond=0) == timestamp.replace(microsecond=0)


# --- the plain path (whole-upload check, columns) gives exactly what the careful path gives --------


def _plain_and_careful(argument: str, channels: int):
    from txm.ttp.parser import _parse_careful, _parse_plain

    plain = _parse_plain(argument, channels)
    try:
        careful = _parse_careful(argument, channels)
    except ProtocolError:
        careful = None
    return plain, careful


def _check_plain(argument: str, channels: int) -> bool:
    """The plain path refuses (None) or agrees with the careful path; True when it answered."""
    plain, careful = _plain_and_careful(argument, channels)
    if plain is None:
        return False
    assert careful is not None, argument
    assert plain.samples() == careful
    assert SQLITE.db_timestamps(plain.timestamps, plain.sent) == [str(s.timestamp) for s in careful]  # its text
    return True


def test_plain_path_takes_the_usual_uploads():
    assert _check_plain("<2030-01-01 00:00:00.000000;1;2.5><2030-01-01 00:00:00.001000;-1;0.25>", 2)
    assert _check_plain("<2009-01-16 15:30:45;11>", 1)
    assert _check_plain("<2009-01-16 15:30:45;11;-.5;7.>", 3)


@pytest.mark.parametrize("argument", [
    "<2009-1-16 15:30:45;1>", "<2009-01-16 15:30:45;+1>", "<2009-01-16 15:30:45;1e3>", "<2009-01-16 15:30:45; 1>",
    "<2009-01-16 24:00:00;1>", "<2009-02-30 00:00:00;1>", "<0000-01-01 00:00:00;1>", "<2009-01-16 15:30:45.123;1>",
    "<2009-01-16T15:30:45;1>", "<2009-01-16 15:30:45;1-2>", "<2009-01-16 15:30:45;->", "<2009-01-16 15:30:45;1.2.3>",
    "<2009-01-16 15:30:45;.>", "<2009-01-16 15:30:45;" + "9" * 41 + ">", "<2009-01-16 15:30:45;1;2>",
    "<2009-01-16 15:30:45>", "<2009-01-16 15:30:45;1>x", "<2009-01-16 15:30:45;١>", "<2009-01-16 15:30:45;1><>",
    "<2009-01-16 15:30:45-05:00;1>", "<2009-01-16 15:30:45;1",
])
def test_plain_path_leaves_everything_else_to_the_other_paths(argument):
    plain, careful = _plain_and_careful(argument, 1)
    assert plain is None
    if careful is not None:  # still accepted, by the other paths, with the same result
        assert parse_samples(argument, 1) == careful


def test_plain_path_needs_a_channel_count():
    from txm.ttp.parser import _parse_plain

    assert _parse_plain("<2009-01-16 15:30:45;11>", None) is None
    assert _parse_plain("<2009-01-16 15:30:45>", 0) is None
    with pytest.raises(ProtocolError):
        parse_samples("<2009-01-16 15:30:45>", 0)


_PLAIN_VALUES = st.one_of(st.integers(-10**12, 10**12).map(str), st.decimals(
    min_value=-10**9, max_value=10**9, allow_nan=False, allow_infinity=False, places=6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(format_value))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.datetimes(min_value=dt.datetime(1000, 1, 1)),
                          st.sampled_from(["sec", "micro", "zero-micro"])), min_size=1, max_size=6),
       st.integers(min_value=1, max_value=4), st.data())
def test_plain_path_equals_careful_path(stamps, channels, data):
    parts = []
    for stamp, form in stamps:
        text = stamp.strftime("%Y-%m-%d %H:%M:%S")
        if form == "micro":
            text += f".{stamp.microsecond:06d}"
        elif form == "zero-micro":
            text += ".000000"
        values = data.draw(st.lists(_PLAIN_VALUES, min_size=channels, max_size=channels))
        parts.append("<" + ";".join([text, *values]) + ">")
    argument = "".join(parts)
    took = _check_plain(argument, channels)
    # Only exponents ("1e+20" from format_value) and 41-character numbers may go the other way.
    assert took or "e" in argument or any(len(v) > 40 for v in argument.split(";"))


_PLAIN_ALPHABET = st.sampled_from(list("<>;:-. 0123456789") + ["2009-01-16 15:30:45", "2009-12-31 23:59:59.999999",
                                                               ".000000", ";1", ";-2.5", "><"])


@settings(max_examples=500, deadline=None)
@given(st.lists(_PLAIN_ALPHABET, max_size=30).map("".join), st.integers(min_value=1, max_value=3))
def test_plain_path_never_accepts_what_the_careful_path_refuses(argument, channels):
    _check_plain(argument, channels)


@settings(max_examples=200, deadline=None)
@given(st.text(_ALPHABET, max_size=80), st.integers(min_value=1, max_value=4))
def test_parse_upload_gives_what_parse_samples_gives(text, channels):
    from txm.ttp.parser import parse_upload

    try:
        samples = parse_samples(text, channels)
    except ProtocolError as exc:
        with pytest.raises(ProtocolError) as info:
            parse_upload(text, channels)
        assert (info.value.code, info.value.reason) == (exc.code, exc.reason)
        return
    upload = parse_upload(text, channels)
    assert upload.samples() == samples
    assert SQLITE.db_timestamps(upload.timestamps, upload.sent) == [str(s.timestamp) for s in samples]
