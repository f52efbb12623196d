"""LoggerNet Data Export records: parse and format both formats, and the acknowledgement.

Bytes in, objects out, and back; nothing here knows sockets or databases. The grammar is
docs/export.md's (from the LoggerNet "Custom Client/Data Export Interface Description"):

RTMS::

    Lgr,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),Battery_V FLOAT,Temp FLOAT) VALUES ('1993-12-08 15:02:00',123456,13.5,72.123)

Standard::

    "Lgr","Sec15","1993-12-08 15:02:00","123456","Battery_V","FLOAT","13.5","Temp","FLOAT","72.123"

Acknowledgement (both)::

    Lgr,Sec15,123456

Every line ends with CR LF. A :class:`Record` holds the station and table names, the
timestamp and record number, and the data fields as (name, type, value text); the value
text is kept as sent, so formatting a parsed record gives back the same bytes.

Quoting
-------
* Standard: every item is a double-quoted string; inside one ``"`` and ``\\`` are written
  ``\\"`` and ``\\\\``. No other escape exists; any other backslash is malformed.
* RTMS: TIMESTAMP and VARCHAR values are single-quoted (``'...'``); the grammar names no
  escape, so txm writes ``'`` and ``\\`` inside one as ``\\'`` and ``\\\\`` (as Standard does)
  and reads ``\\'``, ``\\\\`` and the SQL form ``''``. Other values are bare.
* In RTMS the timestamp and record number are the fields ``TMSTAMP TIMESTAMP`` and
  ``RECNBR DECIMAL(10,0)`` (txm writes them first); a record without them is malformed.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

from txm import timestamps
from txm.errors import TxmError

FORMATS = ("standard", "rtms")
CRLF = b"\r\n"
#: The RTMS field names of the timestamp and the record number.
RTMS_TIMESTAMP = "TMSTAMP"
RTMS_RECORD = "RECNBR"
RTMS_RECORD_TYPE = "DECIMAL(10,0)"
NUMERIC_TYPES = ("FLOAT", "INTEGER")  # and DECIMAL(p,s)

# re.ASCII: digits are 0-9 only (Python's \d, int() and float() take any script's digits too)
_TYPE_RE = re.compile(r"TIMESTAMP|FLOAT|INTEGER|DECIMAL\(\d{1,2},\d{1,2}\)|VARCHAR\(\d+\)", re.ASCII)
_STAMP_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?", re.ASCII)
# LoggerNet names array elements Temp(1), Temp(2); a control character (a NUL, which PostgreSQL
# text cannot hold) makes no name.
_NAME_RE = re.compile(r"[^\s,'\"\x00-\x1f\x7f]+")
_RECNO_RE = re.compile(r"\d+", re.ASCII)
_NUMBER_RE = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|[+-]?(NAN|INF|nan|inf|NaN|Inf)", re.ASCII)


class RecordError(TxmError):
    """A record or acknowledgement that does not follow the grammar; the message says where."""


@dataclass(frozen=True, slots=True)
class Field:
    """One data field: its name, its type (``FLOAT``, ``DECIMAL(10,0)``, ``VARCHAR(20)``...)
    and its value as text (unquoted, unescaped)."""

    name: str
    type: str
    value: str

    @property
    def numeric(self) -> bool:
        return self.type in NUMERIC_TYPES or self.type.startswith("DECIMAL(")

    def number(self) -> float | None:
        """The value of a numeric field as a float; None for ``NAN`` (how Campbell loggers write a
        missing value) and for ``INF``, ``-INF`` or a number beyond a double (``1e309``): an
        over-range reading is no measurement (see :attr:`over_range`)."""
        try:
            value = float(self.value)
        except ValueError:
            raise RecordError(f"field {self.name} ({self.type}) holds {self.value!r}, not a number") from None
        return value if math.isfinite(value) else None

    @property
    def over_range(self) -> bool:
        """A numeric value of ``INF``, ``-INF`` or beyond a double: stored as no value, like ``NAN``."""
        try:
            return math.isinf(float(self.value))
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class Record:
    """One datalogger record as the Data Export interface carries it."""

    station: str
    table: str
    timestamp: str  # YYYY-MM-DD hh:mm:ss[.fff...]
    record_number: int
    fields: tuple[Field, ...] = field(default_factory=tuple)

    def ack(self) -> "Ack":
        return Ack(self.station, self.table, self.record_number)

    def time(self) -> dt.datetime:
        """The timestamp as a datetime; digits past microseconds are dropped."""
        return parse_timestamp(self.timestamp)


@dataclass(frozen=True, slots=True)
class Ack:
    station: str
    table: str
    record_number: int

    def encode(self) -> bytes:
        return format_ack(self)


# --- timestamps and numbers --------------------------------------------------------------------


def format_timestamp(value: dt.datetime) -> str:
    """``YYYY-MM-DD hh:mm:ss`` with as many fraction digits as the time needs (none, or up to 6):
    txm's one form (:func:`txm.timestamps.format_timestamp`) without the fraction's trailing zeros."""
    text = timestamps.format_timestamp(value)
    return text.rstrip("0") if value.microsecond else text


def parse_timestamp(text: str) -> dt.datetime:
    match = _STAMP_RE.fullmatch(text)
    if not match:
        raise RecordError(f"timestamp {text!r} is not YYYY-MM-DD hh:mm:ss[.fff]")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    micro = int((match.group(7) or "0")[:6].ljust(6, "0"))
    try:
        return dt.datetime(year, month, day, hour, minute, second, micro)
    except ValueError as exc:
        raise RecordError(f"timestamp {text!r} is not a real time: {exc}") from None


def format_float(value: float | None) -> str:
    """A FLOAT value: the shortest exact text; ``NAN`` for a missing value, ``INF``/``-INF``."""
    if value is None or math.isnan(value):
        return "NAN"
    if math.isinf(value):
        return "INF" if value > 0 else "-INF"
    return repr(float(value))


# --- Standard format -----------------------------------------------------------------------------


def _quote_standard(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_standard(record: Record) -> bytes:
    """A record in the Standard format, CR LF included."""
    items = [record.station, record.table, record.timestamp, str(record.record_number)]
    for f in record.fields:
        items += (f.name, f.type, f.value)
    return (",".join(_quote_standard(item) for item in items)).encode("utf-8") + CRLF


def _split_standard(line: str, most: int | None = None) -> list[str]:
    """The items of a Standard line; with ``most``, only that many first ones (the rest unread)."""
    items: list[str] = []
    i, n = 0, len(line)
    while True:
        if i >= n or line[i] != '"':
            raise RecordError(f"item {len(items) + 1} does not start with a double quote (at character {i + 1})")
        i += 1
        chars: list[str] = []
        while True:
            if i >= n:
                raise RecordError(f"item {len(items) + 1} has no closing double quote")
            ch = line[i]
            if ch == "\\":
                if i + 1 >= n or line[i + 1] not in '"\\':
                    raise RecordError(f"item {len(items) + 1} has a backslash not followed by \" or \\ "
                                      f"(at character {i + 1})")
                chars.append(line[i + 1])
                i += 2
            elif ch == '"':
                i += 1
                break
            else:
                chars.append(ch)
                i += 1
        items.append("".join(chars))
        if i == n or len(items) == most:
            return items
        if line[i] != ",":
            raise RecordError(f"expected a comma after item {len(items)} (at character {i + 1})")
        i += 1


def parse_standard(line: bytes | str) -> Record:
    """A Standard-format record from one line (with or without its CR LF)."""
    text = _text(line)
    items = _split_standard(text)
    if len(items) < 4 or (len(items) - 4) % 3:
        raise RecordError(f"a Standard record has 4 header items and then 3 per field; this one has {len(items)}")
    station, table, stamp, recno = items[:4]
    _check_name(station, "station name")
    _check_name(table, "table name")
    parse_timestamp(stamp)
    fields = tuple(_field(items[i], items[i + 1], items[i + 2]) for i in range(4, len(items), 3))
    return Record(station, table, stamp, _record_number(recno), fields)


# --- RTMS format ---------------------------------------------------------------------------------


def _quote_rtms(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _rtms_quoted(type_: str) -> bool:
    return type_ == "TIMESTAMP" or type_.startswith("VARCHAR(")


def format_rtms(record: Record) -> bytes:
    """A record in the RTMS format, CR LF included."""
    specs = [f"{RTMS_TIMESTAMP} TIMESTAMP", f"{RTMS_RECORD} {RTMS_RECORD_TYPE}"]
    values = [_quote_rtms(record.timestamp), str(record.record_number)]
    for f in record.fields:
        specs.append(f"{f.name} {f.type}")
        values.append(_quote_rtms(f.value) if _rtms_quoted(f.type) else f.value)
    text = f"{record.station},{record.table} ({','.join(specs)}) VALUES ({','.join(values)})"
    return text.encode("utf-8") + CRLF


def _split_rtms_values(text: str) -> list[tuple[str, bool]]:
    """``'a',1,'b'`` into [(text, quoted)]."""
    values: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while True:
        if i < n and text[i] == "'":
            i += 1
            chars: list[str] = []
            while True:
                if i >= n:
                    raise RecordError(f"value {len(values) + 1} has no closing quote")
                ch = text[i]
                if ch == "\\" and i + 1 < n and text[i + 1] in "'\\":
                    chars.append(text[i + 1])
                    i += 2
                elif ch == "'" and i + 1 < n and text[i + 1] == "'":
                    chars.append("'")
                    i += 2
                elif ch == "'":
                    i += 1
                    break
                else:
                    chars.append(ch)
                    i += 1
            values.append(("".join(chars), True))
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            bare = text[i:end]
            if not bare or "'" in bare or bare != bare.strip():
                raise RecordError(f"value {len(values) + 1} ({bare!r}) is neither a bare number nor quoted")
            values.append((bare, False))
            i = end
        if i == n:
            return values
        if text[i] != ",":
            raise RecordError(f"expected a comma after value {len(values)}")
        i += 1


def parse_rtms(line: bytes | str) -> Record:
    """An RTMS-format record from one line (with or without its CR LF)."""
    text = _text(line)
    head, sep, rest = text.partition(" (")
    if not sep:
        raise RecordError("an RTMS record starts 'Station,Table (' and this one has no ' ('")
    station, comma, table = head.partition(",")
    if not comma:
        raise RecordError("an RTMS record starts 'Station,Table' and this one has no comma before ' ('")
    _check_name(station, "station name")
    _check_name(table, "table name")
    specs_text, sep, values_text = rest.partition(") VALUES (")
    if not sep:
        raise RecordError("an RTMS record has ') VALUES (' after its field list")
    if not values_text.endswith(")"):
        raise RecordError("an RTMS record ends with ')'")
    specs = _split_specs(specs_text)
    values = _split_rtms_values(values_text[:-1])
    if len(values) != len(specs):
        raise RecordError(f"{len(specs)} fields are named but {len(values)} values follow")
    stamp = recno = None
    fields = []
    for (name, type_), (value, quoted) in zip(specs, values):
        if quoted != _rtms_quoted(type_):
            raise RecordError(f"the value of field {name} ({type_}) must " + ("not be quoted" if quoted else
                                                                              "be quoted with '"))
        if name == RTMS_TIMESTAMP and type_ == "TIMESTAMP" and stamp is None:
            parse_timestamp(value)
            stamp = value
        elif name == RTMS_RECORD and recno is None:
            if type_ != RTMS_RECORD_TYPE:
                raise RecordError(f"field {RTMS_RECORD} must be {RTMS_RECORD_TYPE}, not {type_}")
            recno = _record_number(value)
        else:
            fields.append(_field(name, type_, value))
    if stamp is None:
        raise RecordError(f"an RTMS record needs the field {RTMS_TIMESTAMP} TIMESTAMP")
    if recno is None:
        raise RecordError(f"an RTMS record needs the field {RTMS_RECORD} {RTMS_RECORD_TYPE}")
    return Record(station, table, stamp, recno, tuple(fields))


def _split_specs(text: str) -> list[tuple[str, str]]:
    """``Name TYPE,Name TYPE`` into [(name, type)]; a name ends at its space, a type is read by
    the grammar, so neither DECIMAL(10,0) nor a name like Temp(1) confuses the commas."""
    specs = []
    i, n = 0, len(text)
    while True:
        space = text.find(" ", i)
        if space < 0:
            raise RecordError(f"field spec {text[i:i + 40]!r} is not 'Name TYPE'")
        name = text[i:space]
        _check_name(name, "field name")
        match = _TYPE_RE.match(text, space + 1)
        end = match.end() if match else -1
        if not match or (end < n and text[end] != ","):
            shown = text[space + 1:].split(",")[0]
            raise RecordError(f"field {name} has the type {shown!r}; expected TIMESTAMP, FLOAT, INTEGER, "
                              f"DECIMAL(p,s) or VARCHAR(n)")
        specs.append((name, match.group()))
        if end == n:
            return specs
        i = end + 1


# --- both ----------------------------------------------------------------------------------------


def format_record(record: Record, fmt: str) -> bytes:
    return format_rtms(record) if fmt == "rtms" else format_standard(record)


def parse_record(line: bytes | str, fmt: str) -> Record:
    return parse_rtms(line) if fmt == "rtms" else parse_standard(line)


def read_identity(line: bytes | str, fmt: str) -> Ack | None:
    """The station, table and record number of a line that may break the grammar further on (a
    value that is not a number, a timestamp that is no real time), as the acknowledgement that
    would answer it; None when the line does not even say which record it is."""
    try:
        text = _text(line)
        if fmt == "rtms":
            head, sep, rest = text.partition(" (")
            station, _, table = head.partition(",")
            specs_text, sep2, values_text = rest.partition(") VALUES (")
            if not sep or not sep2 or not values_text.endswith(")"):
                return None
            names = [name for name, _ in _split_specs(specs_text)]
            values = _split_rtms_values(values_text[:-1])
            if RTMS_RECORD not in names or len(values) != len(names):
                return None
            recno = values[names.index(RTMS_RECORD)][0]
        else:
            items = _split_standard(text, most=4)
            if len(items) < 4:
                return None
            station, table, _, recno = items
        _check_name(station, "station name")
        _check_name(table, "table name")
        return Ack(station, table, _record_number(recno))
    except RecordError:
        return None


def line_text(line: bytes) -> str:
    """A received line as text, decoded as the parser reads it: UTF-8, else Latin-1 (which
    decodes any bytes)."""
    try:
        return line.decode("utf-8")
    except UnicodeDecodeError:
        return line.decode("latin-1")


def format_ack(ack: Ack | Record) -> bytes:
    """``Station,Table,RecNo`` CR LF."""
    return f"{ack.station},{ack.table},{ack.record_number}".encode("utf-8") + CRLF


def parse_ack(line: bytes | str) -> Ack:
    text = _text(line)
    parts = text.rsplit(",", 2)
    if len(parts) != 3:
        raise RecordError(f"an acknowledgement is Station,Table,RecordNumber, not {text[:80]!r}")
    station, table, recno = parts
    if not station or not table:
        raise RecordError("an acknowledgement names the station and the table")
    return Ack(station, table, _record_number(recno))


def _text(line: bytes | str) -> str:
    if isinstance(line, bytes):
        text = line_text(line[:-2] if line.endswith(CRLF) else line)
    else:
        text = line[:-2] if line.endswith("\r\n") else line
    if "\r" in text or "\n" in text:
        raise RecordError("a record is one line; this one holds a CR or LF")
    return text


def _check_name(name: str, what: str) -> None:
    if not _NAME_RE.fullmatch(name):
        raise RecordError(f"{what} {name[:80]!r} is empty or holds a space, comma, quote or control character")


#: Most digits a record number may have: LoggerNet's are DECIMAL(10,0), and Python reads no
#: more than 4,300 digits as a whole number.
MAX_RECORD_DIGITS = 4300


def _record_number(text: str) -> int:
    if not _RECNO_RE.fullmatch(text):
        raise RecordError(f"record number {text[:40]!r} is not digits")
    if len(text) > MAX_RECORD_DIGITS:
        raise RecordError(f"record number {text[:20]}... has {len(text)} digits; at most {MAX_RECORD_DIGITS} are read")
    return int(text)


def _field(name: str, type_: str, value: str) -> Field:
    _check_name(name, "field name")
    if not _TYPE_RE.fullmatch(type_):
        raise RecordError(f"field {name} has the type {type_!r}; expected TIMESTAMP, FLOAT, INTEGER, "
                          f"DECIMAL(p,s) or VARCHAR(n)")
    f = Field(name, type_, value)
    if f.numeric and not _NUMBER_RE.fullmatch(value):
        raise RecordError(f"field {name} ({type_}) holds {value!r}, not a number")
    if type_ == "TIMESTAMP":
        parse_timestamp(value)
    return f


def field_name(label: str) -> str:
    """A channel label as a field name both formats carry: a space, comma or quote becomes ``_``."""
    name = re.sub(r"[\s,'\"]", "_", label)
    return name or "_"
