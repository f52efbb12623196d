"""txm as a LoggerNet Data Export server: stored samples pushed to one client, each until acknowledged.

The server state diagram of the LoggerNet "Custom Client/Data Export Interface Description":

* **Wait For Client** -- listening; a client connects and the session opens. A client whose
  address is not in ``EXPORT_ALLOWED_CLIENTS`` (when that lists any) is closed at once. A second
  client while one is attached is refused -- accepted and closed at once (it retries, as the
  client diagram says, and gets in once the first has gone) -- unless the attached one is
  *silent*: it has left a record unacknowledged for ``EXPORT_RESEND_SECONDS`` or longer. Then
  the new client takes the slot over and the silent one is closed.
* **Wait For Record Available** -- the next sample after the last acknowledged one (in id
  order, among ``EXPORT_UNITS``) is looked for every :data:`POLL_SECONDS`; once there, it is
  sent as one record.
* **Wait For Ack** -- an acknowledgement ``Station,Table,RecNo`` for exactly that record
  advances (**Advance Rec**): the sample id is stored as the last acknowledged one, in the
  database, and the next record goes out. Any other acknowledgement, or a line that is not
  one, is ignored. With no valid acknowledgement for ``EXPORT_RESEND_SECONDS`` the same
  record is sent again; when it has been sent again ``EXPORT_MAX_RESENDS`` times and still
  goes unacknowledged, the client is dropped.
* The session ends when the client closes the connection, on a socket error, when it is
  dropped or taken over, or on stop; the next session resumes after the last acknowledged
  record, also after a restart of txm.

Records: station = unit code, table = ``EXPORT_TABLE``, record number = sample id,
timestamp = the sample's time, one ``FLOAT`` field per channel named by its label (``NAN``
where the sample has no value). ``EXPORT_START`` says where the very first session starts:
every stored sample (``all``) or the newest one (``newest``).
"""

from __future__ import annotations

import collections
import ipaddress
import logging
import selectors
import socket
import threading
import time
from typing import Any

import peewee as pw

from txm import net
from txm.config import IPNetwork, Settings, ip_networks
from txm.db import schema
from txm.db.database import close_quietly
from txm.db.dialect import Dialect
from txm.db.sqlite import write_transaction
from txm.errors import ConfigError
from txm.export.csv import settled_last_id
from txm.framing import TOO_LONG, Framer
from txm.logs import RateLimitedLog
from txm.loggernet import records

log = logging.getLogger("txm.dataexport")

#: The ``export_cursor`` row holding the last acknowledged sample id.
CURSOR_NAME = "dataexport"
#: Seconds between looks for a new sample while none is waiting.
POLL_SECONDS = 0.5
#: Records read from the database at once.
RECORDS_PER_QUERY = 200
#: Longest acknowledgement line kept (its CR LF not counted); a longer one is discarded.
MAX_ACK_BYTES = 4096
#: Seconds a record may take to be written to a client that does not read.
SEND_TIMEOUT = 10.0
#: A refused connection is logged the first time for each client address and reason; later
#: ones are counted, and the count logged once a minute (:class:`txm.logs.RateLimitedLog`).
REFUSAL_LOG_SECONDS = 60.0

_LISTENER = object()


def check_table_name(name: str) -> str:
    """EXPORT_TABLE must be a name both formats carry unquoted in acknowledgements."""
    if not records._NAME_RE.fullmatch(name):
        raise ConfigError(f"EXPORT_TABLE {name!r} must be a name without spaces, commas or quotes")
    return name


def check_allowed_clients(entries: list[str]) -> list[IPNetwork]:
    """The networks EXPORT_ALLOWED_CLIENTS lists (none: any address may connect)."""
    try:
        return ip_networks(entries)
    except ValueError as exc:
        raise ConfigError(f"EXPORT_ALLOWED_CLIENTS: {exc}") from None


class Pending:
    """A sample about to be sent: its record and the bytes on the wire."""

    __slots__ = ("sample_id", "record", "line", "deadline", "sends")

    def __init__(self, sample_id: int, record: records.Record, line: bytes):
        self.sample_id = sample_id
        self.record = record
        self.line = line
        self.deadline = 0.0
        self.sends = 0


class Session:
    """The one attached client."""

    def __init__(self, sock: socket.socket, peer: Any):
        self.sock = sock
        self.peer = _peer(peer)
        self.framer = Framer(MAX_ACK_BYTES + 1, ends="lf", resume=True)  # + 1: the CR of a CR LF
        self.pending: Pending | None = None
        self.queue: collections.deque[Pending] = collections.deque()
        # Since when the client owes an acknowledgement (None: it owes none), and how often the
        # record was sent again since then.
        self.owed_since: float | None = None
        self.resends = 0

    def owes(self, now: float | None) -> None:
        """The client owes an acknowledgement from ``now`` on (None: it owes none)."""
        self.owed_since = now
        self.resends = 0

    def silent_for(self, now: float) -> float:
        """Seconds the client has left a record unacknowledged (0: it owes no acknowledgement)."""
        return 0.0 if self.owed_since is None else now - self.owed_since


class ExportServer:
    """The Data Export server. ``run(stop_event)`` serves until the event is set."""

    def __init__(self, settings: Settings, database: pw.Database, listener: socket.socket | None = None):
        self.settings = settings
        self.db = database
        self.format = settings.EXPORT_FORMAT
        self.table = check_table_name(settings.EXPORT_TABLE)
        self.resend_seconds = settings.EXPORT_RESEND_SECONDS
        self.max_resends = settings.EXPORT_MAX_RESENDS
        self.allowed_clients = check_allowed_clients(settings.EXPORT_ALLOWED_CLIENTS)
        self.unit_codes = list(settings.EXPORT_UNITS)
        if listener is None:
            listener = net.listen(settings.BIND_ADDRESS, settings.EXPORT_PORT, "Data Export clients", backlog=8)
        self.listener = listener
        self.port = listener.getsockname()[1]
        self.session: Session | None = None
        self.last_acked: int | None = None
        self.acknowledged = 0  # records acknowledged since start (for tests and logs)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, _LISTENER)
        self._units: dict[int, tuple[str, list[str]]] = {}
        self._next_poll = 0.0
        self._scanned = 0  # samples up to this id were looked at in this session
        self._missing_codes: set[str] = set()
        self._refusals = RateLimitedLog(log, "refused Data Export connection(s)", REFUSAL_LOG_SECONDS, 0)

    @property
    def description(self) -> str:
        return (f"LoggerNet Data Export server on {self.settings.BIND_ADDRESS}:{self.port} "
                f"({self.format} format, table {self.table})")

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self._step()
                except pw.PeeweeException as exc:
                    log.warning("database error while exporting (retrying): %s", exc)
                    close_quietly(self.db)
                    self._next_poll = time.monotonic() + POLL_SECONDS
                except Exception:  # a bug must not end the service: drop the session, go on
                    log.exception("Data Export server error; closing the session")
                    self._end_session("internal error")
                    stop.wait(1.0)
        finally:
            self.close()

    def _step(self) -> None:
        now = time.monotonic()
        session = self.session
        timeout = POLL_SECONDS
        if session is not None and session.pending is not None:
            timeout = max(0.0, min(timeout, session.pending.deadline - now))
        for key, _ in self._selector.select(timeout):
            if key.data is _LISTENER:
                self._accept()
            elif self.session is not None:
                self._read(self.session)
        self._refusals.tick()
        session = self.session
        if session is None:
            return
        if session.pending is None:
            self._send_next(session)
        elif time.monotonic() >= session.pending.deadline:
            pending = session.pending
            if self.max_resends and session.resends >= self.max_resends:
                self._end_session(f"dropped: record {pending.sample_id} of {pending.record.station} is still "
                                  f"unacknowledged after being sent again {session.resends} time(s) "
                                  f"(EXPORT_MAX_RESENDS); the next session starts with it")
                return
            log.info("no acknowledgement from %s for record %s of %s within %g s; sending it again",
                     session.peer, pending.sample_id, pending.record.station, self.resend_seconds)
            session.resends += 1
            self._send(session, pending)

    def _accept(self) -> None:
        while True:
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("accepting a Data Export client failed: %s", exc)
                return
            if not self._admit(peer):
                sock.close()
                continue
            sock.setblocking(True)
            sock.settimeout(SEND_TIMEOUT)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.session = Session(sock, peer)
            self._selector.register(sock, selectors.EVENT_READ, self.session)
            try:
                self.last_acked = self._start_position()
            except pw.PeeweeException as exc:
                log.warning("database error at the start of a Data Export session: %s", exc)
                close_quietly(self.db)
                self._end_session("the database is not available")
                return
            self._scanned = self.last_acked
            log.info("Data Export client %s attached; sending records after sample id %d",
                     self.session.peer, self.last_acked)
            self._next_poll = 0.0

    def _admit(self, peer: Any) -> bool:
        """May this new client attach? Not when its address is not allowed, nor while the attached
        client is active; a silent one is closed to make room."""
        address = _address(peer)
        if self.allowed_clients and not (address is not None and any(
                address in network for network in self.allowed_clients)):
            self._refusals.event(("not allowed", str(address)), logging.WARNING,
                                   "refused Data Export client %s: its address is not in EXPORT_ALLOWED_CLIENTS",
                                   _peer(peer))
            return False
        session = self.session
        if session is None:
            return True
        silent, pending = session.silent_for(time.monotonic()), session.pending
        if pending is None or silent < self.resend_seconds:
            self._refusals.event(("busy", str(address)), logging.INFO,
                                   "refused Data Export client %s: %s is attached (one client at a time)",
                                   _peer(peer), session.peer)
            return False
        self._end_session(f"taken over by {_peer(peer)}: record {pending.sample_id} of {pending.record.station} "
                          f"unacknowledged for {silent:.1f} s")
        return True

    def _read(self, session: Session) -> None:
        try:
            data = session.sock.recv(65536)
        except (BlockingIOError, InterruptedError, socket.timeout):
            return
        except OSError as exc:
            self._end_session(f"connection error: {exc}")
            return
        if not data:
            self._end_session("the client closed the connection")
            return
        for line in session.framer.feed(data):
            if line is TOO_LONG:
                log.warning("Data Export client %s sent a line longer than %d bytes; discarded",
                            session.peer, MAX_ACK_BYTES)
                continue
            self._acknowledgement(session, line)
            if self.session is not session:
                return

    def _acknowledgement(self, session: Session, line: bytes) -> None:
        pending = session.pending
        text = line.rstrip(b"\r\n")
        try:
            ack = records.parse_ack(text)
        except records.RecordError as exc:
            log.info("ignored a line from Data Export client %s that is not an acknowledgement (%s): %r",
                     session.peer, exc, text[:100])
            return
        if pending is None or ack != pending.record.ack():
            expected = pending.record.ack() if pending else None
            log.info("ignored acknowledgement %s,%s,%d from %s; waiting for %s", ack.station, ack.table,
                     ack.record_number, session.peer,
                     f"{expected.station},{expected.table},{expected.record_number}" if expected else "none")
            return
        try:
            self._advance(pending.sample_id)
        except pw.PeeweeException as exc:
            # not stored: the record is sent again and its next acknowledgement advances
            log.warning("database error storing the acknowledgement of record %d: %s", pending.sample_id, exc)
            close_quietly(self.db)
            session.owes(time.monotonic())  # the client did its part: not silent, not to be dropped
            return
        self.acknowledged += 1
        session.pending = None
        session.owes(None)
        self._send_next(session)

    def _end_session(self, why: str) -> None:
        session = self.session
        if session is None:
            return
        log.info("Data Export client %s detached: %s", session.peer, why)
        try:
            self._selector.unregister(session.sock)
        except (KeyError, ValueError):
            pass
        session.sock.close()
        self.session = None

    def close(self) -> None:
        self._end_session("txm is stopping")
        try:
            self._selector.unregister(self.listener)
        except (KeyError, ValueError):
            pass
        self.listener.close()
        self._selector.close()
        if not self.db.is_closed():
            self.db.close()

    # --- records ----------------------------------------------------------------------------------

    def _send_next(self, session: Session) -> None:
        if not session.queue:
            now = time.monotonic()
            if now < self._next_poll:
                return
            self._next_poll = now + POLL_SECONDS
            batch = self._fetch(max(self.last_acked or 0, self._scanned))
            if len(batch) == RECORDS_PER_QUERY:
                self._next_poll = 0.0  # a backlog: the next batch as soon as this one is through
            session.queue.extend(batch)
            if not session.queue:
                return
        pending = session.queue.popleft()
        session.pending = pending
        session.owes(time.monotonic())
        self._send(session, pending)

    def _send(self, session: Session, pending: Pending) -> None:
        try:
            session.sock.sendall(pending.line)
        except OSError as exc:
            self._end_session(f"cannot send: {exc}")
            return
        pending.sends += 1
        pending.deadline = time.monotonic() + self.resend_seconds

    def _advance(self, sample_id: int) -> None:
        with write_transaction(self.db):
            cursor = schema.ExportCursor.get_or_none(schema.ExportCursor.name == CURSOR_NAME)
            if cursor is None:
                schema.ExportCursor.create(name=CURSOR_NAME, last_sample_id=sample_id, updated=schema.utcnow())
            else:
                schema.ExportCursor.update(last_sample_id=sample_id, updated=schema.utcnow()).where(
                    schema.ExportCursor.id == cursor.id).execute()
        self.last_acked = sample_id

    def _start_position(self) -> int:
        """The last acknowledged sample id; for the very first session set from EXPORT_START."""
        self.db.connect(reuse_if_open=True)
        cursor = schema.ExportCursor.get_or_none(schema.ExportCursor.name == CURSOR_NAME)
        if cursor is not None:
            return cursor.last_sample_id
        start = 0
        if self.settings.EXPORT_START == "newest":
            query = schema.Sample.select(pw.fn.MAX(schema.Sample.id))
            unit_ids = self._unit_ids()
            if unit_ids is not None:
                query = query.where(schema.Sample.unit.in_(unit_ids or [0]))
            newest = query.scalar()
            start = newest - 1 if newest else 0
        schema.ExportCursor.create(name=CURSOR_NAME, last_sample_id=start, updated=schema.utcnow())
        return start

    def _unit_ids(self) -> list[int] | None:
        """Ids of the EXPORT_UNITS (None: every unit)."""
        if not self.unit_codes:
            return None
        found = dict(schema.Unit.select(schema.Unit.code, schema.Unit.id)
                     .where(schema.Unit.code.in_(self.unit_codes)).tuples())
        for code in self.unit_codes:
            if code not in found and code not in self._missing_codes:
                self._missing_codes.add(code)
                log.warning("EXPORT_UNITS names %r, which is not a unit; it is left out", code)
        return list(found.values())

    def _fetch(self, after: int) -> list[Pending]:
        """The next records after sample id ``after``, oldest first."""
        self.db.connect(reuse_if_open=True)
        upto = settled_last_id(self.db, after)
        if upto <= after:
            return []
        unit_ids = self._unit_ids()
        if unit_ids is not None and not unit_ids:
            return []
        d = Dialect.of(self.db)
        id_col = d.ident("id")
        sql = (f"SELECT {d.idents(['id', 'unit_id', 'timestamp', *schema.CHANNEL_COLUMNS])} FROM {d.ident('sample')} "
               f"WHERE {id_col} > {d.param} AND {id_col} <= {d.param}")
        params: list[Any] = [after, upto]
        if unit_ids is not None:
            sql += f" AND {d.ident('unit_id')} IN ({d.markers(len(unit_ids))})"
            params += unit_ids
        sql += f" ORDER BY {id_col} LIMIT {RECORDS_PER_QUERY}"
        cursor = self.db.cursor()
        cursor.execute(sql, params)
        rows = cursor.fetchall()
        # samples of other units need not be looked at again in this session
        self._scanned = upto if len(rows) < RECORDS_PER_QUERY else rows[-1][0]
        self._load_units({row[1] for row in rows})
        out = []
        for row in rows:
            sample_id, unit_id, stamp = row[0], row[1], row[2]
            code, names = self._units[unit_id]
            when = Dialect.to_datetime(stamp)
            fields = tuple(records.Field(name, "FLOAT", records.format_float(row[3 + i]))
                           for i, name in enumerate(names))
            record = records.Record(code, self.table, records.format_timestamp(when), sample_id, fields)
            out.append(Pending(sample_id, record, records.format_record(record, self.format)))
        return out

    def _load_units(self, unit_ids: set[int]) -> None:
        """Code and field names of these units, read afresh for every batch (labels may change)."""
        if not unit_ids:
            return
        for unit in schema.Unit.select().where(schema.Unit.id.in_(list(unit_ids))):
            self._units[unit.id] = (unit.code, field_names(unit.channel_labels()))



def field_names(labels: list[str]) -> list[str]:
    """One distinct field name per channel label (a repeated one gets ``_2``, ``_3``...)."""
    names: list[str] = []
    reserved = {records.RTMS_TIMESTAMP, records.RTMS_RECORD}
    for label in labels:
        base = records.field_name(label)
        name, n = base, 1
        while name in names or name in reserved:
            n += 1
            name = f"{base}_{n}"
        names.append(name)
    return names


def _peer(peer: Any) -> str:
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)


def _address(peer: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The client's IP address; an IPv4 client of a dual-stack (``::``) listener by its IPv4 address."""
    try:
        address = ipaddress.ip_address(peer[0])
    except (TypeError, IndexError, ValueError):
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
