"""The one line framer (txm/framing.py): each protocol's rules, the same lines however the bytes
are cut, and time linear in the bytes whatever they are.

The framers it replaced are kept here, as they were, to compare with: TTP's (the parser's
``Framer``), the TTP client's reply reading and the LoggerNet client's record reading.
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from txm.framing import TOO_LONG, Framer

# --- the framers it replaced ---------------------------------------------------------------------


class OldTTPFramer:
    """txm.ttp.parser.Framer before txm/framing.py (quadratic on a stream of LF only or CR only)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._buf = b""
        self._skip_lf = False
        self._failed = False

    def feed(self, data: bytes) -> list:
        if self._failed or not data:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 10:
                data = data[1:]
                if not data:
                    return []
        buf = self._buf + data if self._buf else data
        lines: list = []
        start = 0
        size = len(buf)
        limit = self.max_bytes
        while start < size:
            cr = buf.find(b"\r", start)
            lf = buf.find(b"\n", start)
            if cr < 0 and lf < 0:
                break
            if cr < 0 or (0 <= lf < cr):
                end, nxt = lf, lf + 1
            else:
                end, nxt = cr, cr + 1
                if nxt < size:
                    if buf[nxt] == 10:
                        nxt += 1
                else:
                    self._skip_lf = True
            if end - start > limit:
                self._failed = True
                self._buf = b""
                lines.append(TOO_LONG)
                return lines
            if end > start:
                lines.append(buf[start:end])
            start = nxt
        rest = buf[start:] if start else buf
        if len(rest) > limit:
            self._failed = True
            self._buf = b""
            lines.append(TOO_LONG)
            return lines
        self._buf = rest
        return lines


def old_replies(data: bytes) -> list:
    """The replies txm.client.TTPClient read from ``data`` before (a reply ends with CR; an LF
    right after it was dropped when it had arrived with it)."""
    replies = []
    while b"\r" in data:
        reply, _, rest = data.partition(b"\r")
        data = rest[1:] if rest[:1] == b"\n" else rest
        replies.append(reply)
    return replies


def old_records(data: bytes, max_bytes: int) -> list:
    """The lines the LoggerNet client handled from ``data`` before (all its CRs and LFs stripped),
    :data:`TOO_LONG` for each it discarded as longer than ``max_bytes`` (CR LF not counted)."""
    events, buffer, discarding = [], data, False
    while True:
        newline = buffer.find(b"\n")
        if newline < 0:
            if len(buffer) > max_bytes:
                events.append(TOO_LONG)
            return events
        line, buffer = buffer[:newline + 1], buffer[newline + 1:]
        if discarding or len(line) > max_bytes + 2:
            if not discarding:
                events.append(TOO_LONG)
            discarding = False
            continue
        events.append(line.rstrip(b"\r\n"))


def feed_all(framer, chunks) -> list:
    lines = []
    for chunk in chunks:
        lines += framer.feed(chunk)
    return lines


def cut(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` cut at these places (any, in any order)."""
    places = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(places, places[1:])]


# --- each protocol's rules -----------------------------------------------------------------------


def test_ttp_requests_end_with_cr_crlf_or_lf_and_blank_lines_are_skipped():
    framer = Framer(100)
    assert framer.feed(b"A\rB\r\nC\nD\r\r\n\n") == [b"A", b"B", b"C", b"D"]
    assert framer.feed(b"\nE") == [] and framer.pending
    assert framer.feed(b"F\r") == [b"EF"] and not framer.pending


def test_ttp_replies_end_with_cr_or_crlf_and_a_blank_one_is_a_reply():
    framer = Framer(None, ends="cr")
    assert framer.feed(b"OK\r\r404 Data Not found\r\nOK <1 2026-01-02 03:04:05 7>\r") == [
        b"OK", b"", b"404 Data Not found", b"OK <1 2026-01-02 03:04:05 7>"]
    assert framer.feed(b"\n") == []  # the LF of a CR LF, in the next packet
    assert framer.feed(b"a\nb\r") == [b"a\nb"]  # a lone LF is not an end
    assert framer.feed(b"x" * 10_000_000) == [] and framer.pending  # no limit


def test_loggernet_lines_end_with_lf_keep_their_cr_and_blank_ones():
    framer = Framer(10, ends="lf", resume=True)
    assert framer.feed(b"Lgr,T,1\r\n\nA\rB\n\r\n") == [b"Lgr,T,1\r", b"", b"A\rB", b"\r"]


def test_loggernet_over_long_lines_are_skipped_to_their_end_and_framing_goes_on():
    framer = Framer(5, ends="lf", resume=True)
    assert framer.feed(b"12345\n123456\nab\n") == [b"12345", TOO_LONG, b"ab"]
    assert framer.feed(b"xyz") == [] and framer.pending
    assert framer.feed(b"xyz") == [TOO_LONG] and not framer.pending  # reported once it is too long
    assert framer.feed(b"still the same line") == []
    assert framer.feed(b" and its end\ncd\n") == [b"cd"]


def test_ttp_stops_after_an_over_long_line():
    framer = Framer(5)
    assert framer.feed(b"ab\r123456\rcd\r") == [b"ab", TOO_LONG]
    assert framer.feed(b"ef\r") == [] and not framer.pending


def test_ends_are_checked():
    with pytest.raises(ValueError, match="ends must be one of any, cr, lf"):
        Framer(10, ends="crlf")


# --- the same lines however the bytes come ---------------------------------------------------------

_BYTES = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b"a", b"bc", b"\xff", b"defghijk"]), max_size=60).map(b"".join)
_CUTS = st.lists(st.integers(min_value=0, max_value=10_000), max_size=30)


@settings(max_examples=500, deadline=None)
@given(_BYTES, _CUTS, st.integers(min_value=1, max_value=20))
def test_ttp_lines_are_the_old_framers_whatever_the_bytes_and_packets(data, cuts, limit):
    chunks = cut(data, cuts)
    assert feed_all(Framer(limit), chunks) == feed_all(OldTTPFramer(limit), chunks)


@settings(max_examples=500, deadline=None)
@given(_BYTES, _CUTS, st.sampled_from(["any", "cr", "lf"]), st.booleans(), st.integers(min_value=1, max_value=20))
def test_the_lines_do_not_depend_on_the_packets(data, cuts, ends, resume, limit):
    whole = Framer(limit, ends=ends, resume=resume).feed(data)
    assert feed_all(Framer(limit, ends=ends, resume=resume), cut(data, cuts)) == whole
    assert feed_all(Framer(limit, ends=ends, resume=resume), [bytes([b]) for b in data]) == whole


@settings(max_examples=500, deadline=None)
@given(_BYTES, _CUTS)
def test_ttp_replies_are_what_the_client_read_before(data, cuts):
    assert feed_all(Framer(None, ends="cr"), cut(data, cuts)) == old_replies(data)


@settings(max_examples=500, deadline=None)
@given(_BYTES, _CUTS, st.integers(min_value=1, max_value=20))
def test_loggernet_records_are_what_the_client_took_before(data, cuts, limit):
    data += b"\n"  # whole lines: the old client's limit on a line not yet ended depended on the packets
    lines = feed_all(Framer(limit + 1, ends="lf", resume=True), cut(data, cuts))  # + 1: the CR of CR LF
    assert [line if line is TOO_LONG else line.rstrip(b"\r") for line in lines] == old_records(data, limit)


# --- linear in the bytes received, whatever they are ---------------------------------------------

PIECE = 65536
MIB = 1 << 20


def _alternating(size: int) -> bytes:
    return (b"\n" * PIECE + b"\r" * PIECE) * (size // (2 * PIECE))


_STREAMS = {
    "LF only": lambda size: b"\n" * size,
    "CR only": lambda size: b"\r" * size,
    "LF and CR in turns, a packet each": _alternating,
    "CR LF": lambda size: b"\r\n" * (size // 2),
    "one-byte lines": lambda size: b"a\n" * (size // 2),
}


def _cpu_seconds(framer_args: tuple, data: bytes, piece: int) -> float:
    max_bytes, ends, resume = framer_args
    framer = Framer(max_bytes, ends=ends, resume=resume)
    start = time.process_time()
    for i in range(0, len(data), piece):
        framer.feed(data[i:i + piece])
    return time.process_time() - start


_FRAMERS = {"ttp": (MIB, "any", False), "ttp-client": (None, "cr", False), "loggernet": (MIB, "lf", True)}


def _split_seconds(data: bytes, piece: int) -> float:
    """The baseline: what merely splitting each packet at every CR and LF costs (in C)."""
    start = time.process_time()
    for i in range(0, len(data), piece):
        data[i:i + piece].replace(b"\r", b"\n").split(b"\n")
    return time.process_time() - start


@pytest.mark.parametrize("framer_args", list(_FRAMERS.values()), ids=list(_FRAMERS))
@pytest.mark.parametrize("stream", list(_STREAMS.values()), ids=list(_STREAMS))
def test_ten_megabytes_take_well_under_a_second_of_cpu_whatever_they_are(framer_args, stream):
    """The TTP framer this replaced took 5.7 s for 10 MB of LF in 64 KiB packets: for each line
    it looked for a CR up to the end of the packet, so each packet cost the square of its size.
    The bound, 1 s, grows on a slow machine to ten times what splitting the bytes costs there."""
    data = stream(10 * MIB)
    baseline = _split_seconds(data, PIECE)
    cpu = _cpu_seconds(framer_args, data, PIECE)
    assert cpu < max(1.0, 10 * baseline), (cpu, baseline)


@pytest.mark.parametrize("framer_args", [(8 * MIB, "any", False), (None, "cr", False), (8 * MIB, "lf", True)],
                         ids=list(_FRAMERS))
def test_a_long_line_in_many_small_packets_is_not_copied_again_for_each(framer_args):
    """The framers this replaced joined the whole unfinished line to each packet (a 4 MiB line in
    64-byte packets: 128 GB copied). The baseline is a line an eighth as long: a linear framer
    takes eight times as long for the whole line, that one sixty-four times."""
    end = b"\n" if framer_args[1] == "lf" else b"\r"
    baseline = _cpu_seconds(framer_args, b"x" * (MIB // 2) + end, 64)
    cpu = _cpu_seconds(framer_args, b"x" * (4 * MIB) + end, 64)
    assert cpu < max(1.0, 20 * baseline), (cpu, baseline)
