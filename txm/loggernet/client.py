"""txm as a LoggerNet Data Export client: records pulled from LoggerNet (or another txm) into units.

The client state diagram of the LoggerNet "Custom Client/Data Export Interface Description":

* **Test For Server Rdy** -- open the socket; if that fails, wait :data:`RETRY_SECONDS` (5 s)
  and try again.
* **Wait For Record** -- each record that arrives is **secured** (its sample committed to the
  database together with its record number) and only then **acknowledged** with
  ``Station,Table,RecNo``. A watchdog (``LOGGERNET_WATCHDOG_SECONDS``, RecIntv2) closes and
  reopens the socket when no record arrives for that long.
* **Stop** -- at any time: the socket is closed and the client returns.

Each station/table is a unit: the one named in ``LOGGERNET_UNITS`` (``STATION.TABLE=CODE``),
else one created on first sight when ``LOGGERNET_AUTO_CREATE`` is on (code from the station
and table names, a generated key, one channel per numeric field labelled with the field's
name). The record's timestamp is the sample's time; its numeric fields (FLOAT, INTEGER,
DECIMAL) are the channels, in order; other fields are not stored.

The ``loggernet_source`` row of a station/table keeps the number of the last record stored.
A record that arrives with that same number again (its acknowledgement was lost) is
acknowledged again without being stored twice. Samples are unique per unit and timestamp as
well, so a record whose time the unit already has is acknowledged and not stored.

``NAN`` (Campbell's missing value), ``INF``, ``-INF`` and numbers beyond a double are stored as
no value (NULL); an over-range value is logged once per station, table and field.

A record that can never be stored -- one that breaks the grammar, a value that is not a number,
a timestamp that is no real time, a record number beyond 64 bits, a station or table name too
long, a value the database refuses -- is **quarantined**: its line is kept in the
``loggernet_quarantine`` table with the reason (the admin panel shows it), logged (rate-limited),
and acknowledged, so the stream goes on. A line that does not even name its station, table and
record number cannot be acknowledged: it is quarantined once and the server sends it again after
its resend interval. What may come right later is not acknowledged, and logged: no unit for the
station/table (until it is mapped), a database that fails. A line longer than
``LOGGERNET_MAX_RECORD_BYTES`` (its CR LF not counted) is discarded, not acknowledged.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import peewee as pw

from txm.config import Settings
from txm.db import schema
from txm.db.database import close_quietly, first_line
from txm.db.samples import SampleStore, UnitRecord
from txm.db.sqlite import write_transaction
from txm.errors import ConfigError, TxmError
from txm.framing import TOO_LONG, Framer
from txm.loggernet import records
from txm.logs import RateLimitedLog

log = logging.getLogger("txm.loggernet")

#: Seconds to wait after a failed connection attempt (the interface description's 5 s).
RETRY_SECONDS = 5.0
#: Seconds allowed to open the connection.
CONNECT_TIMEOUT = 10.0
#: Longest wait in one socket read, so a stop request is seen quickly.
READ_SLICE = 0.25
#: Seconds over which lines about quarantined (or unacknowledged) records are counted, and lines
#: logged per window beyond each station/table/reason's first; a flood of bad records is summed
#: up in one line.
QUARANTINE_LOG_WINDOW = 60.0
QUARANTINE_LOG_LINES = 20
#: The longest reason kept with a quarantined record, or logged.
MAX_REASON = 1000
#: Station/table/field names remembered as warned about; forgotten all at once past this.
MAX_WARNED = 10_000


class Unstorable(TxmError):
    """A record that follows the grammar but that txm can never store: it is quarantined."""


@dataclass(frozen=True)
class Outcome:
    """What became of one line: acknowledged (``ack`` bytes) or not (``reason``), and whether its
    sample was stored or the line quarantined."""

    ack: bytes | None
    reason: str = ""
    stored: bool = False
    quarantined: bool = False


def parse_unit_map(entries: list[str]) -> dict[tuple[str, str], str]:
    """``LOGGERNET_UNITS`` entries ``STATION.TABLE=CODE`` as {(station, table): code}."""
    mapping: dict[tuple[str, str], str] = {}
    for entry in entries:
        source, eq, code = entry.partition("=")
        station, dot, table = source.strip().partition(".")
        code = code.strip()
        if not eq or not dot or not station or not table or not schema.UNIT_CODE_RE.match(code):
            raise ConfigError(f"LOGGERNET_UNITS entry {entry!r} must be STATION.TABLE=CODE "
                              f"(CODE: letters and digits)")
        mapping[(station, table)] = code
    return mapping


def generated_code(station: str, table: str) -> str:
    """A unit code from a station and table name: their letters and digits, at most 64."""
    code = (re.sub(r"[^A-Za-z0-9]", "", station) + re.sub(r"[^A-Za-z0-9]", "", table))[:64]
    return code or "LoggerNet"


def channel_label(name: str) -> str:
    """A field name as a channel label (no spaces or = < > ; , \" ', at most 64 characters)."""
    return re.sub(r"[\s=<>;,\"']", "_", name)[:64]


class RecordStore:
    """Secures records: finds or creates the unit of a station/table and stores the sample."""

    def __init__(self, settings: Settings, database: pw.Database):
        self.db = database
        self.auto_create = settings.LOGGERNET_AUTO_CREATE
        self.unit_map = parse_unit_map(settings.LOGGERNET_UNITS)
        self.store = SampleStore(database)
        self._warned: set[tuple[str, str]] = set()

    def check(self, record: records.Record) -> None:
        """:class:`Unstorable` for what the grammar allows but the database cannot keep."""
        if record.record_number > schema.MAX_RECORD_NUMBER:
            raise Unstorable(f"record number {record.record_number} is beyond {schema.MAX_RECORD_NUMBER}, "
                             f"the largest the database keeps")
        for name, what in ((record.station, "station name"), (record.table, "table name")):
            if len(name) > schema.MAX_LOGGERNET_NAME:
                raise Unstorable(f"the {what} has {len(name)} characters; at most {schema.MAX_LOGGERNET_NAME} "
                                 f"are kept")

    def _warn_once(self, key: tuple, message: str, *args) -> None:
        if key in self._warned:
            return
        if len(self._warned) >= MAX_WARNED:
            self._warned.clear()
        self._warned.add(key)
        log.warning(message, *args)

    def secure(self, record: records.Record) -> bool:
        """Store the record's sample and number in one committed transaction; False when
        it was stored before (the same record number again, or a sample at that time)."""
        when = record.time()
        numbers = []
        for f in record.fields:
            if f.numeric:
                numbers.append(f.number())
                if f.over_range:
                    self._warn_once((record.station, record.table, f.name),
                                    "field %s of %s/%s holds %s (over range); such values are stored as no value "
                                    "(logged once per field)", f.name, record.station, record.table, f.value)
        self.db.connect(reuse_if_open=True)
        with write_transaction(self.db):
            source = (schema.LoggerNetSource.select()
                      .where((schema.LoggerNetSource.station == record.station)
                             & (schema.LoggerNetSource.table_name == record.table)).first())
            if source is None:
                unit = self._unit_for(record, len(numbers))
                source = schema.LoggerNetSource.create(station=record.station, table_name=record.table, unit=unit)
            elif source.last_record == record.record_number:
                log.info("record %s/%s %d was stored before (its acknowledgement was lost); acknowledging it again",
                         record.station, record.table, record.record_number)
                return False
            unit = schema.Unit.get_by_id(source.unit_id)
            if len(numbers) > unit.channels:
                self._warn_once((record.station, record.table), "records of %s/%s have %d numeric fields; unit %s "
                                "keeps the first %d", record.station, record.table, len(numbers), unit.code,
                                unit.channels)
            values = (numbers + [None] * unit.channels)[:unit.channels]
            target = UnitRecord(unit.id, unit.code, unit.key, unit.channels, tuple(unit.labels or ()), False)
            inserted = self.store.insert_samples(target, [(when, values)], schema.utcnow())[0]
            schema.LoggerNetSource.update(last_record=record.record_number, updated=schema.utcnow()).where(
                schema.LoggerNetSource.id == source.id).execute()
        if not inserted:
            log.info("unit %s already has a sample at %s; record %s/%s %d acknowledged without storing it",
                     unit.code, record.timestamp, record.station, record.table, record.record_number)
        return inserted

    def quarantine(self, line: bytes, reason: str, identity: records.Ack | None, server: str, fmt: str) -> bool:
        """Keep a line that cannot be stored, with the reason, in one committed transaction;
        False when that very line is kept already (a record sent again)."""
        digest = hashlib.sha256(line).hexdigest()
        raw = records.line_text(line).replace("\0", "\ufffd")  # PostgreSQL text holds no NUL
        self.db.connect(reuse_if_open=True)
        with write_transaction(self.db):
            if schema.QuarantinedRecord.select().where(schema.QuarantinedRecord.digest == digest).exists():
                return False
            schema.QuarantinedRecord.insert(
                server=server[:300], format=fmt, reason=reason[:MAX_REASON], acknowledged=identity is not None,
                station=identity.station[:schema.MAX_LOGGERNET_NAME] if identity else "",
                table_name=identity.table[:schema.MAX_LOGGERNET_NAME] if identity else "",
                record_number=str(identity.record_number) if identity else "", digest=digest, raw=raw,
            ).on_conflict_ignore().execute()
        return True

    def _unit_for(self, record: records.Record, numeric: int) -> schema.Unit:
        code = self.unit_map.get((record.station, record.table))
        if code is not None:
            unit = schema.Unit.get_or_none(schema.Unit.code == code)
            if unit is not None:
                return unit
            if not self.auto_create:
                raise TxmError(f"LOGGERNET_UNITS maps {record.station}.{record.table} to unit {code}, "
                               f"which does not exist; create it with txm unit add")
        elif not self.auto_create:
            raise TxmError(f"no unit for station {record.station} table {record.table}: map it in "
                           f"LOGGERNET_UNITS or switch LOGGERNET_AUTO_CREATE on")
        else:
            base = generated_code(record.station, record.table)
            code, n = base, 1
            while schema.Unit.select().where(schema.Unit.code == code).exists():
                n += 1
                code = f"{base[:64 - len(str(n))]}{n}"
        numeric_fields = [f for f in record.fields if f.numeric][:schema.MAX_CHANNELS]
        labels = [channel_label(f.name) for f in numeric_fields]
        unit = schema.Unit.create(code=code, key=secrets.token_urlsafe(24), name=f"{record.station} {record.table}"[:200],
                                  channels=max(1, len(numeric_fields)), labels=labels)
        log.info("created unit %s for LoggerNet station %s table %s (%d channel(s))", code, record.station,
                 record.table, unit.channels)
        return unit


class PullClient:
    """The Data Export client. ``run(stop_event)`` pulls until the event is set."""

    def __init__(self, settings: Settings, database: pw.Database, host: str | None = None,
                 port: int | None = None, fmt: str | None = None, watchdog: float | None = None,
                 retry_seconds: float = RETRY_SECONDS):
        self.settings = settings
        self.db = database
        self.host = host or settings.LOGGERNET_HOST
        self.port = port or settings.LOGGERNET_PORT
        self.format = fmt or settings.LOGGERNET_FORMAT
        if self.format not in records.FORMATS:
            raise ConfigError(f"the record format must be one of {', '.join(records.FORMATS)}, not {self.format!r}")
        self.watchdog = watchdog or settings.LOGGERNET_WATCHDOG_SECONDS
        self.max_bytes = settings.LOGGERNET_MAX_RECORD_BYTES
        self.retry_seconds = retry_seconds
        self.records = RecordStore(settings, database)
        self.sessions = 0  # connections opened (for tests and logs)
        self.acknowledged = 0
        self.quarantined = 0
        self.quarantine_log = RateLimitedLog(log, "quarantined record(s)", QUARANTINE_LOG_WINDOW,
                                             QUARANTINE_LOG_LINES)
        self.unacknowledged_log = RateLimitedLog(log, "unacknowledged record(s)", QUARANTINE_LOG_WINDOW,
                                                 QUARANTINE_LOG_LINES)

    @property
    def description(self) -> str:
        return f"LoggerNet client pulling from {self.host}:{self.port} ({self.format} format)"

    # --- one line ---------------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> Outcome:
        """Parse and secure one record; the acknowledgement to send, or why there is none.
        A record that can never be stored is quarantined and, when it names itself, acknowledged."""
        try:
            record = records.parse_record(line, self.format)
            self.records.check(record)
            stored = self.records.secure(record)
        except (records.RecordError, Unstorable) as exc:
            return self._quarantine(line, str(exc))
        except TxmError as exc:  # no unit for it yet: it may be mapped later
            return Outcome(None, str(exc))
        except (pw.DataError, OverflowError) as exc:  # a value the database refuses, now and ever
            return self._quarantine(line, f"the database refuses it: {first_line(exc)}")
        except pw.PeeweeException as exc:
            close_quietly(self.db)
            return Outcome(None, f"database error: {first_line(exc)}")
        except Exception as exc:  # a bug must not end the pull: log it, do not acknowledge
            log.exception("storing a record failed")
            return Outcome(None, f"internal error: {type(exc).__name__}")
        return Outcome(records.format_ack(record), stored=stored)

    def _quarantine(self, line: bytes, reason: str) -> Outcome:
        identity = records.read_identity(line, self.format)
        reason = reason[:MAX_REASON]
        try:
            new = self.records.quarantine(line, reason, identity, f"{self.host}:{self.port}", self.format)
        except pw.PeeweeException as exc:
            close_quietly(self.db)
            return Outcome(None, f"{reason}; quarantining it failed too: database error: {first_line(exc)}")
        except Exception as exc:  # a bug must not end the pull: log it, do not acknowledge
            log.exception("quarantining a record failed")
            return Outcome(None, f"{reason}; quarantining it failed too: internal error: {type(exc).__name__}")
        if new:
            self.quarantined += 1
        if identity is None:
            return Outcome(None, reason, quarantined=new)
        if new:
            self.quarantine_log.event((identity.station, identity.table, reason[:40]), logging.WARNING,
                                      "quarantined record %s/%s %s: %s; acknowledged (see the admin panel)",
                                      identity.station[:80], identity.table[:80], identity.record_number, reason)
        else:
            log.info("record %s/%s %s was quarantined before; acknowledging it again", identity.station[:80],
                     identity.table[:80], identity.record_number)
        return Outcome(records.format_ack(identity), reason, quarantined=True)

    def send_ack(self, sock: socket.socket, ack: bytes) -> None:
        """Acknowledge a secured record (a separate step so tests can stand between the two)."""
        sock.sendall(ack)
        self.acknowledged += 1

    # --- the connection ---------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                sock = self._connect(stop)
                if sock is None:
                    continue
                try:
                    self._session(sock, stop)
                finally:
                    sock.close()
        finally:
            self.quarantine_log.flush()
            self.unacknowledged_log.flush()
            close_quietly(self.db)

    def _connect(self, stop: threading.Event) -> socket.socket | None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            log.warning("cannot connect to the Data Export server %s:%s (%s); trying again in %g s",
                        self.host, self.port, exc.strerror or exc, self.retry_seconds)
            stop.wait(self.retry_seconds)
            return None
        sock.settimeout(READ_SLICE)
        self.sessions += 1
        log.info("connected to the Data Export server %s:%s", self.host, self.port)
        return sock

    def _session(self, sock: socket.socket, stop: threading.Event) -> None:
        framer = Framer(self.max_bytes + 1, ends="lf", resume=True)  # + 1: the CR of a CR LF
        last_record = time.monotonic()
        while not stop.is_set():
            if time.monotonic() - last_record > self.watchdog:
                log.warning("no record from %s:%s for %g s (watchdog); reopening the connection",
                            self.host, self.port, self.watchdog)
                return
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError as exc:
                log.warning("connection to %s:%s failed: %s; reopening it", self.host, self.port, exc)
                stop.wait(min(self.retry_seconds, 1.0))
                return
            if not data:
                log.info("the Data Export server %s:%s closed the connection; reopening it in %g s",
                         self.host, self.port, self.retry_seconds)
                stop.wait(self.retry_seconds)
                return
            for line in framer.feed(data):
                last_record = time.monotonic()
                if line is TOO_LONG:
                    log.warning("a record from %s:%s is longer than %d bytes; discarded, not acknowledged",
                                self.host, self.port, self.max_bytes)
                    continue
                outcome = self.handle_line(line.rstrip(b"\r"))
                if outcome.ack is None:
                    self.unacknowledged_log.event((outcome.reason[:40],), logging.WARNING,
                                                  "record not acknowledged%s: %s: %r",
                                                  " (quarantined)" if outcome.quarantined else "", outcome.reason,
                                                  line[:120])
                    continue
                log.debug("record %s %s; acknowledging it", outcome.ack.decode("utf-8", "replace").strip(),
                          "stored" if outcome.stored else "already stored")
                try:
                    self.send_ack(sock, outcome.ack)
                except OSError as exc:
                    log.warning("cannot acknowledge to %s:%s (%s); reopening the connection", self.host,
                                self.port, exc)
                    return

