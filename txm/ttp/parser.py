"""TTP parsing: request lines in, request objects out. Knows nothing of sockets or databases.

The lines come from :class:`txm.framing.Framer` (a request ends with CR, CR LF or LF; blank lines
are skipped; a line longer than ``MAX_REQUEST_BYTES`` is reported once and ends the
connection). Two pieces, each usable alone:

* :func:`parse_request` turns one line into a :class:`Request`:
  ``TTP /<verb>/<unit code>/<argument> <unit key>``.
* :func:`parse_samples` turns an upload's argument into :class:`SampleIn` objects, with the
  manual's timestamp rules (:func:`parse_upload` gives the same as columns, the upload verb's
  hot path); :func:`format_value` prints values the way meters expect them.

Every problem with the input is a :class:`ProtocolError` carrying the TTP code (400) and a
reason for the log; nothing else is raised for any input.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from dataclasses import dataclass

#: TTP response codes and phrases, as the Data Server manual lists them.
PHRASES = {
    400: "Bad request",
    402: "Unauthorized",
    404: "Data Not found",
    405: "Unit Not Found",
    406: "Duplicate sample",
    500: "Internal error",
    501: "Not implemented",
}

class ProtocolError(Exception):
    """A request the protocol cannot accept. ``code`` is the TTP code, ``reason`` is for logs.

    ``detail`` is appended to the reply after the phrase (the 406 reply lists duplicates there).
    The reason may quote the request but never the unit key.
    """

    def __init__(self, code: int, reason: str = "", detail: str = ""):
        super().__init__(reason or PHRASES.get(code, ""))
        self.code = code
        self.reason = reason
        self.detail = detail

    def reply(self) -> str:
        """The response line without its CR: ``400 Bad request``, ``406 Duplicate sample 2<...>``."""
        return error_reply(self.code, self.detail)


def error_reply(code: int, detail: str = "") -> str:
    text = f"{code} {PHRASES.get(code, 'Error')}"
    return f"{text} {detail}" if detail else text


def bad(reason: str) -> ProtocolError:
    return ProtocolError(400, reason)


# --- requests --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One TTP request: ``TTP /<verb>/<code>/<argument> <key>``."""

    verb: str
    code: str
    argument: str
    key: str

    def describe(self) -> str:
        """The request for a log line: everything but the unit key, shortened."""
        arg = self.argument if len(self.argument) <= 80 else self.argument[:77] + "..."
        return f"/{self.verb}/{self.code}/{arg}"


_VERB_RE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")
_CODE_RE = re.compile(r"[A-Za-z0-9]{1,64}\Z")


def parse_request(line: bytes) -> Request:
    """Parse one request line (terminator removed). Raises :class:`ProtocolError` (400)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise bad("request is not valid UTF-8") from None
    if not text.startswith("TTP /"):
        raise bad("request does not start with 'TTP /'")
    path, sep, key = text[5:].rpartition(" ")
    if not sep or not key:
        raise bad("request has no unit key at its end")
    parts = path.split("/", 2)
    if len(parts) != 3:
        raise bad("request path is not /<verb>/<unit code>/<argument>")
    verb, code, argument = parts
    verb = verb.lower()
    if not _VERB_RE.match(verb):
        raise bad("request verb is not a word")
    if not _CODE_RE.match(code):
        raise bad("unit code is not 1 to 64 letters and digits")
    return Request(verb, code, argument, key)


# --- samples ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleIn:
    """One uploaded sample: its timestamp, the timestamp as sent, and its values."""

    timestamp: dt.datetime
    sent: str
    values: tuple[float, ...]


_SAMPLES_RE = re.compile(r"(?:<[^<>]*>)+\Z")
_ONE_SAMPLE_RE = re.compile(r"<([^<>]*)>")
_TIMESTAMP_RE = re.compile(
    r"[ \t]*(\d{1,4})-(\d{1,2})-(\d{1,2})[ T](\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?[ \t]*\Z", re.ASCII)
# Digits are ASCII digits only (re.ASCII: \d would also match ١٢٣ or fullwidth ２０２６, and int()
# and float() read those too), as docs/protocol.md says.
# Every pattern here is unambiguous (each character can be matched one way only), so no input,
# however long, makes the regular expression engine backtrack for long.
_STRICT_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = r"[ \t]*" + _STRICT_NUMBER + r"[ \t]*"
_NUMBER_RE = re.compile(_NUMBER + r"\Z", re.ASCII)
_NUMBERS_RE = re.compile(f"{_NUMBER}(?:;{_NUMBER})*\\Z", re.ASCII)
_STRICT_NUMBERS_RE = re.compile(f"{_STRICT_NUMBER}(?:;{_STRICT_NUMBER})*\\Z", re.ASCII)
_STRICT_TIMESTAMP_RE = re.compile(r"(\d{1,4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{1,2}):(\d{1,2})(?:\.(\d{1,6}))?\Z", re.ASCII)


def parse_timestamp(text: str) -> dt.datetime:
    """A sample timestamp by the manual's rules; :class:`ProtocolError` (400) when impossible.

    The year's missing leading digits come from 2000 (``7`` is 2007, ``97`` is 2097); missing
    trailing digits of the microseconds are zeros (``.1`` is 100000 µs).
    """
    match = _TIMESTAMP_RE.match(text)
    if match is None:
        raise bad("timestamp is not YYYY-M-D H:M:S[.ffffff]")
    year, month, day, hour, minute, second, micro = match.groups()
    y = int(year)
    if len(year) < 4:
        y += 2000
    try:
        return dt.datetime(y, int(month), int(day), int(hour), int(minute), int(second),
                           int(micro.ljust(6, "0")) if micro else 0)
    except ValueError:
        raise bad("timestamp is not a real date and time") from None


def parse_number(text: str) -> float:
    """A channel value: an integer or decimal, optionally signed, optionally with an exponent."""
    if not _NUMBER_RE.match(text):
        raise bad("value is not a number")
    value = float(text)
    if not math.isfinite(value):
        raise bad("value is out of range")
    return value


@dataclass(slots=True)
class Upload:
    """An upload's samples as parallel lists, in the order sent: what the upload verb stores."""

    timestamps: list[dt.datetime]
    sent: list[str]
    values: list[tuple[float, ...]]

    def samples(self) -> list[SampleIn]:
        return list(map(SampleIn, self.timestamps, self.sent, self.values))


def parse_samples(argument: str, channels: int | None = None) -> list[SampleIn]:
    """The samples of an upload: ``<ts;v1;...;vN><ts;...>...``.

    With ``channels`` given, every sample must carry exactly that many values.
    """
    upload = _parse_plain(argument, channels)
    if upload is not None:
        return upload.samples()
    samples = _parse_fast(argument, channels)
    if samples is None:
        samples = _parse_careful(argument, channels)  # also finds the reason for a refusal
    return samples


def parse_upload(argument: str, channels: int | None = None) -> Upload:
    """What :func:`parse_samples` gives, as an :class:`Upload` (columns, no object per sample)."""
    upload = _parse_plain(argument, channels)
    if upload is None:
        samples = _parse_fast(argument, channels)
        if samples is None:
            samples = _parse_careful(argument, channels)
        upload = Upload([s.timestamp for s in samples], [s.sent for s in samples], [s.values for s in samples])
    return upload


# The plainest uploads, as most meters send them: zero-padded timestamps and numbers made of
# digits, "-" and "." only, so short that they cannot overflow. One regular expression checks
# the whole argument (unambiguous like the others: linear time); the rest is C loops.
_PLAIN_STAMP = r"[0-9]{4}-[0-9]{2}-[0-9]{2} (?:[01][0-9]|2[0-3]):[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?"
_PLAIN_NUMBER = r"[-.0-9]{1,40}"  # float() refuses what is not a number ("1-2", "-", "1.2.3")


@functools.lru_cache(maxsize=64)
def _plain_upload_re(channels: int) -> re.Pattern:
    return re.compile(f"(?:<{_PLAIN_STAMP}(?:;{_PLAIN_NUMBER}){{{channels}}}>)+\\Z")


def _parse_plain(argument: str, channels: int | None) -> Upload | None:
    """Plain uploads with ``channels`` values per sample, the hot path; None for anything else."""
    if not channels or channels < 1 or not _plain_upload_re(channels).match(argument):
        return None
    fields = argument[1:-1].replace("><", ";").split(";")
    width = channels + 1
    sent = fields[::width]
    try:
        # For exactly this form fromisoformat() is datetime(int(year), int(month), ...).
        timestamps = list(map(dt.datetime.fromisoformat, sent))
        if len(fields) == width:
            values = [tuple(map(float, fields[1:]))]
        elif width == 2:
            values = list(zip(map(float, fields[1::2])))
        else:
            values = list(zip(*[map(float, fields[k::width]) for k in range(1, width)]))
    except ValueError:  # not a real date or not a number: the careful path says why
        return None
    return Upload(timestamps, sent, values)


def _parse_fast(argument: str, channels: int | None) -> list[SampleIn] | None:
    """Well-formed uploads without stray spaces, the hot path; None for anything unusual."""
    if argument[:1] != "<" or argument[-1:] != ">":
        return None
    samples = []
    datetime = dt.datetime
    from_iso = datetime.fromisoformat
    isfinite = math.isfinite
    match_timestamp = _STRICT_TIMESTAMP_RE.match
    match_numbers = _STRICT_NUMBERS_RE.match
    for body in argument[1:-1].split("><"):
        sent, _, numbers = body.partition(";")
        stamp = match_timestamp(sent)
        if stamp is None or not match_numbers(numbers):
            return None
        fields = numbers.split(";")
        if channels is not None and len(fields) != channels:
            return None
        values = tuple(map(float, fields))
        # Only an exponent or a very long number can overflow to infinity.
        if ("e" in numbers or "E" in numbers or len(numbers) > 300) and not all(map(isfinite, values)):
            return None
        try:
            size = len(sent)
            if (size == 19 or (size == 26 and sent[19] == ".")) and sent[4] == "-" and sent[7] == "-" \
                    and sent[10] == " " and sent[13] == ":" and sent[16] == ":":
                timestamp = from_iso(sent)  # fully zero-padded, as most meters send it
            else:
                year, month, day, hour, minute, second, micro = stamp.groups()
                y = int(year)
                if len(year) < 4:
                    y += 2000
                timestamp = datetime(y, int(month), int(day), int(hour), int(minute), int(second),
                                     int(micro.ljust(6, "0")) if micro else 0)
        except ValueError:
            return None
        samples.append(SampleIn(timestamp, sent, values))
    return samples


def _parse_careful(argument: str, channels: int | None) -> list[SampleIn]:
    if not _SAMPLES_RE.match(argument):
        raise bad("upload is not a series of <timestamp;value;...> samples")
    samples = []
    for body in _ONE_SAMPLE_RE.findall(argument):
        fields = body.split(";")
        if channels is not None and len(fields) - 1 != channels:
            raise bad(f"sample has {len(fields) - 1} value(s), the unit has {channels} data field(s)")
        if len(fields) < 2:
            raise bad("sample has no values")
        sent = fields[0]
        numbers = body[len(sent) + 1:]
        if not _NUMBERS_RE.match(numbers):
            raise bad("value is not a number")
        values = tuple(map(float, fields[1:]))
        if not all(map(math.isfinite, values)):
            raise bad("value is out of range")
        samples.append(SampleIn(parse_timestamp(sent), sent, values))
    return samples


# --- responses -------------------------------------------------------------------------------------


def format_value(value: float | None) -> str:
    """A value as a meter expects it: ``11`` not ``11.0``, ``11.5`` as ``11.5``."""
    if value is None:
        return "0"
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(float(value))


# --- alarms ----------------------------------------------------------------------------------------

#: Most data items an alarm may carry after its level.
MAX_ALARM_DATA = 64
#: Longest data item, in characters.
MAX_ALARM_DATA_CHARS = 200
#: Alarm levels are stored in a 32-bit integer column.
LEVEL_RANGE = (-(2 ** 31), 2 ** 31 - 1)

_ALARM_RE = re.compile(r"<([^<>]*)>\Z")
_LEVEL_RE = re.compile(r"[ \t]*([+-]?\d{1,10})[ \t]*\Z", re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def parse_alarm(argument: str) -> tuple[int, list[str]]:
    """``<LEVEL;DATA;DATA...>`` as (level, data); :class:`ProtocolError` 400 when malformed."""
    match = _ALARM_RE.match(argument)
    if match is None:
        raise bad("alarm is not <level;data;...>")
    level_text, *data = match.group(1).split(";")
    level_match = _LEVEL_RE.match(level_text)
    if level_match is None:
        raise bad("alarm level is not a whole number")
    level = int(level_match.group(1))
    if not LEVEL_RANGE[0] <= level <= LEVEL_RANGE[1]:
        raise bad("alarm level is out of range")
    if len(data) > MAX_ALARM_DATA:
        raise bad(f"alarm has {len(data)} data items, at most {MAX_ALARM_DATA} are accepted")
    for item in data:
        if len(item) > MAX_ALARM_DATA_CHARS:
            raise bad(f"alarm data item is longer than {MAX_ALARM_DATA_CHARS} characters")
        if _CONTROL_RE.search(item):
            raise bad("alarm data holds a control character")
    return level, data
