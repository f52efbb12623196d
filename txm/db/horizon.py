"""The sample-id horizon: the highest sample id below which no open transaction can still commit
a sample, so that an incremental export (``txm export-csv --since-last``, the LoggerNet Data
Export server) may move its cursor there and never skip a sample committed late.

Sample ids are handed out in time order (a PostgreSQL sequence with ``CACHE 1``, MariaDB's
AUTO_INCREMENT), but the transactions that took them commit in any order. The scheme, proved
in docs/export.md ("Which samples are final"):

1. read ``H = MAX(id)`` of the sample table; every id up to H was handed out before this read;
2. then look at the transactions that may still hold such an id without having committed it
   (PostgreSQL: every transaction holding a lock on the sample id sequence, which ``nextval()``
   takes before it hands out a value and keeps until the transaction ends; MariaDB: the open
   InnoDB transactions and the statements running now);
3. once every one of those has ended, every id up to H is final: committed (and visible to
   any later read) or never to be.

A :class:`Horizon` remembers a few such checkpoints ``(H, what was open)`` and answers, without
waiting, the highest H whose transactions have all ended (:meth:`Horizon.settled`: the LoggerNet
server asks on every poll); :meth:`Horizon.wait` waits a bounded time for the newest one (the
one-shot ``txm export-csv``). On SQLite there is one writer at a time, so every visible id is
final.

Privileges: none on PostgreSQL (``pg_locks`` is readable by every user); on MariaDB the PROCESS
privilege, for ``information_schema.INNODB_TRX`` and the other connections in
``information_schema.PROCESSLIST``.
"""

from __future__ import annotations

import secrets
import threading
import time
import weakref
from typing import Any

import peewee as pw

from txm.db.dialect import Dialect
from txm.errors import DatabaseError

#: Seconds between looks while :meth:`Horizon.wait` waits (MariaDB refreshes its list of
#: transactions only once nobody has read it for 0.1 s).
POLL_SECONDS = 0.2
#: Checkpoints a horizon remembers at once; an older one is dropped, never a sample.
MAX_CHECKPOINTS = 8
#: MariaDB PROCESSLIST commands of connections that run no statement of a client.
_MARIADB_IDLE = frozenset({"Sleep", "Daemon", "Binlog Dump", "Slave_IO", "Slave_SQL", "Slave_worker"})
#: MariaDB's "Access denied; you need the PROCESS privilege".
_MARIADB_NO_PRIVILEGE = 1227

_horizons: weakref.WeakKeyDictionary[pw.Database, Horizon] = weakref.WeakKeyDictionary()
_horizons_lock = threading.Lock()


class Horizon:
    """The sample ids of one database that are final: no transaction still open can commit a
    sample with an id at or below :meth:`settled`. :meth:`of` gives the one of a database."""

    def __init__(self, db: pw.Database):
        self.db = db
        self.kind = Dialect.of(db).kind
        self._watch = {"postgresql": _PostgresqlWatch, "mysql": _MariadbWatch}.get(self.kind, _NoWatch)(db)
        self._lock = threading.Lock()
        self._checkpoints: list[tuple[int, Any]] = []  # (H, what was open), H ascending
        self._final = 0
        #: The newest H seen by the last look (what :meth:`wait` waits for).
        self.newest = 0
        #: What the last look found still open, for messages (e.g. "2 transaction(s)").
        self.open_count = 0
        #: Set by a caller that has reported a problem of this horizon (said once, not on every poll).
        self.reported = False

    @classmethod
    def of(cls, db: pw.Database) -> Horizon:
        """The horizon of ``db``, made on first use and kept as long as ``db`` lives, so that its
        checkpoints serve every later call (the LoggerNet server polls twice a second)."""
        with _horizons_lock:
            horizon = _horizons.get(db)
            if horizon is None:
                horizon = _horizons[db] = cls(db)
            return horizon

    def settled(self, after_id: int = 0) -> int:
        """The highest sample id that is final now (at least ``after_id``), after one look at
        the database and without waiting. Call it outside a transaction of one's own."""
        with self._lock:
            self._look()
            return max(after_id, self._final)

    def wait(self, after_id: int = 0, timeout: float = 0.0) -> int:
        """Like :meth:`settled`, but waits up to ``timeout`` seconds for the transactions open
        at the first look to end. A result below :attr:`newest` means some were still open."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._look()
            target = self.newest
            while max(after_id, self._final) < target and time.monotonic() < deadline:
                time.sleep(min(POLL_SECONDS, max(0.0, deadline - time.monotonic())))
                self._look()
            self.newest = target
            return max(after_id, self._final)

    def _look(self) -> None:
        if self.db.in_transaction():  # its snapshot may be older than the look, and MariaDB's would end
            raise RuntimeError("the sample horizon must be read outside a transaction")
        # H first, then what is open: the order the proof rests on
        top = int(self._sql(f"SELECT MAX({self._ident('id')}) FROM {self._ident('sample')}").fetchone()[0] or 0)
        self.newest = max(self.newest, top)
        seen = self._watch.look(self._sql)
        if seen is None:  # no reliable look this time: nothing moves
            return
        kept: list[tuple[int, Any]] = []
        for h, pending in self._checkpoints:
            pending = self._watch.still_open(pending, seen)
            if pending:
                kept.append((h, pending))
            else:
                self._final = max(self._final, h)
        if top > max([self._final, *(h for h, _ in kept)]):
            pending = self._watch.open_now(seen)
            if pending:
                kept.append((top, pending))
            else:
                self._final = top
        kept = [(h, p) for h, p in kept if h > self._final]
        if len(kept) > MAX_CHECKPOINTS:
            del kept[-2]  # the newest stays (it is what a waiting export wants), older ones are nearer
        self._checkpoints = kept
        self.open_count = len(self._watch.open_now(seen))

    def _ident(self, name: str) -> str:
        return Dialect.of(self.db).ident(name)

    def _sql(self, sql: str, params: tuple = ()) -> Any:
        """Run a statement; a driver's error comes as peewee's (what a server's loop retries on)."""
        return self.db.execute_sql(sql, params)


class _NoWatch:
    """SQLite: one writer at a time, so a visible id was committed after every smaller one."""

    def __init__(self, db: pw.Database):
        pass

    def look(self, sql: Any) -> Any:
        return ()

    def open_now(self, seen: Any) -> Any:
        return ()

    def still_open(self, pending: Any, seen: Any) -> Any:
        return ()


class _PostgresqlWatch:
    """PostgreSQL: the transactions that hold a lock on the sample id sequence.

    ``nextval()`` locks the sequence (RowExclusiveLock) before it hands out a value, and the
    lock is released at the end of the transaction, after its commit became visible. A
    transaction is named by its virtual transaction id, which it has from its start (an xid
    comes only with its first write, after ``nextval()``: comparing xids with a snapshot's
    ``xmin`` misses a transaction in between).
    """

    def __init__(self, db: pw.Database):
        self.db = db
        self._sequence: int | None = None

    def _sequence_oid(self, sql: Any) -> int:
        if self._sequence is None:
            row = sql("SELECT s.seqrelid, s.seqcache FROM pg_sequence s "
                      "WHERE s.seqrelid = pg_get_serial_sequence('sample', 'id')::regclass").fetchone()
            if row is None:
                raise DatabaseError("the sample table's id has no sequence; incremental exports need one")
            if row[1] != 1:
                raise DatabaseError(
                    f"the sample id sequence hands out {row[1]} values at a time to each connection "
                    f"(CACHE {row[1]}), so ids are not given out in time order; incremental exports need "
                    f"ALTER SEQUENCE sample_id_seq CACHE 1")
            self._sequence = int(row[0])
        return self._sequence

    def look(self, sql: Any) -> frozenset[str]:
        oid = self._sequence_oid(sql)
        # pid is NULL for a prepared (two-phase) transaction: it is waited for like the others
        rows = sql("SELECT DISTINCT virtualtransaction FROM pg_locks WHERE locktype = 'relation' "
                   "AND relation = %s AND database = (SELECT oid FROM pg_database "
                   "WHERE datname = current_database()) AND pid IS DISTINCT FROM pg_backend_pid()", (oid,)).fetchall()
        return frozenset(row[0] for row in rows)

    def open_now(self, seen: frozenset[str]) -> frozenset[str]:
        return seen

    def still_open(self, pending: frozenset[str], seen: frozenset[str]) -> frozenset[str]:
        return pending & seen


class _MariadbWatch:
    """MariaDB: the open InnoDB transactions, and the statements running now.

    InnoDB hands out an AUTO_INCREMENT value before it starts the statement's transaction and
    before the row is in the table, so a connection is waited for if it had an open
    transaction, or was running a statement, when looked at. ``information_schema.INNODB_TRX`` is a copy refreshed only once nobody has read
    it for 0.1 s: a look counts only if the copy holds the looking connection's own
    transaction, started after H was read (recognised by a random tag in its statement).

    A connection still to be waited for is ``(connection id, ("stmt", query id))`` until the
    statement it ran has ended, then ``("trx", started)``: until it has no transaction started
    at or before that time (a transaction keeps its start time; a later one starts no earlier).
    """

    def __init__(self, db: pw.Database):
        self.db = db

    def look(self, sql: Any) -> tuple[dict[int, int], dict[int, Any]] | None:
        rows = sql("SELECT ID, COMMAND, QUERY_ID FROM information_schema.PROCESSLIST "
                   "WHERE ID <> CONNECTION_ID() AND (DB IS NULL OR DB = DATABASE())").fetchall()
        running = {int(pid): int(query) for pid, command, query in rows if command not in _MARIADB_IDLE}
        tag = f"txm-horizon-{secrets.token_hex(8)}"
        try:
            sql("START TRANSACTION WITH CONSISTENT SNAPSHOT")
            try:
                rows = sql(f"SELECT t.trx_mysql_thread_id, t.trx_started, t.trx_query, '{tag}' "
                           f"FROM information_schema.INNODB_TRX t LEFT JOIN information_schema.PROCESSLIST p "
                           f"ON p.ID = t.trx_mysql_thread_id WHERE p.DB IS NULL OR p.DB = DATABASE() "
                           f"OR p.ID = CONNECTION_ID()").fetchall()
                truncated = bool(sql("SHOW WARNINGS").fetchall())  # "data truncated": the copy is incomplete
            finally:
                sql("COMMIT")
        except pw.OperationalError as exc:
            if exc.args and exc.args[0] == _MARIADB_NO_PRIVILEGE:
                raise DatabaseError(
                    "incremental exports on MariaDB need the PROCESS privilege for txm's database user, to see "
                    "which transactions are still open: GRANT PROCESS ON *.* TO <user>") from None
            raise
        own = [row for row in rows if row[2] and tag in row[2]]
        if not own or truncated:
            return None
        me = own[0][0]
        open_trx: dict[int, Any] = {}
        for pid, started, _query, _tag in rows:
            if pid != me:
                open_trx[int(pid)] = max(started, open_trx.get(int(pid), started))
        return running, open_trx

    def open_now(self, seen: tuple[dict[int, int], dict[int, Any]]) -> dict[int, tuple[str, Any]]:
        running, open_trx = seen
        pending: dict[int, tuple[str, Any]] = {pid: ("stmt", query) for pid, query in running.items()}
        pending.update({pid: ("trx", started) for pid, started in open_trx.items()})
        return pending

    def still_open(self, pending: dict[int, tuple[str, Any]],
                   seen: tuple[dict[int, int], dict[int, Any]]) -> dict[int, tuple[str, Any]]:
        running, open_trx = seen
        result = {}
        for pid, (kind, value) in pending.items():
            if kind == "stmt":
                if running.get(pid) == value:
                    result[pid] = (kind, value)
                elif pid in open_trx:  # the statement ended; its transaction, if open, is listed now
                    result[pid] = ("trx", open_trx[pid])
            elif pid in open_trx and open_trx[pid] <= value:
                result[pid] = (kind, value)
        return result
