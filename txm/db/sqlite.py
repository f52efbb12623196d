"""What SQLite needs that the server databases do not: its one write lock, and its write-ahead log.

* :func:`write_transaction` -- a read-then-write transaction that waits for the lock;
* :func:`between_batches` -- how a bulk writer lets the TTP server in between its batches;
* :class:`Checkpointer` -- copies the WAL into the database file beside the TTP loop.

Each does nothing special on PostgreSQL and MySQL, which lock rows, not the database.
"""

from __future__ import annotations

import logging
import threading
import time

import peewee as pw

from txm.db.dialect import Dialect
from txm.db.schema import database

log = logging.getLogger("txm.db")

#: SQLite: WAL pages after which the loop's commit copies them into the database file (SQLite's
#: default is 1,000). A pass of uploads from many meters dirties an index page per meter; a
#: longer WAL lets a checkpoint copy each such page once for many passes instead of once for few.
SQLITE_CHECKPOINT_PAGES = 20_000
#: SQLite: seconds between the checkpointer thread's copies of the WAL into the database file,
#: while the loop commits. It does the copying beside the loop (SQLite works without Python's
#: lock), so the loop's own checkpoint every SQLITE_CHECKPOINT_PAGES finds little left to copy.
SQLITE_CHECKPOINT_SECONDS = 0.1
#: Bounds of the pause a bulk writer makes after each batch on SQLite, seconds (between_batches).
BULK_PAUSE_MIN = 0.002
BULK_PAUSE_MAX = 0.05


def between_batches(locked_at: float, db: pw.Database | None = None) -> None:
    """What a bulk writer (:func:`txm.db.bulk.delete_in_batches`) does after committing each
    batch, whose write transaction held the lock from ``locked_at`` (``time.monotonic()``).
    SQLite only:

    * copy what the write-ahead log holds into the database file now, without waiting for or
      blocking anyone (a passive checkpoint), so that the TTP server's commit does not later
      copy the whole of it in one long go;
    * pause as long as the batch held the lock (within BULK_PAUSE_MIN and BULK_PAUSE_MAX).
      SQLite's waiting writers poll for the lock, more slowly the longer they wait: a bulk
      writer that took the lock again at once would keep the TTP server out for the whole
      operation, however small its batches.

    PostgreSQL and MySQL lock rows, not the database: nothing to do there.
    """
    db = db if db is not None else database.obj
    if Dialect.of(db).kind == "sqlite":
        held = time.monotonic() - locked_at
        db.execute_sql("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        time.sleep(min(BULK_PAUSE_MAX, max(BULK_PAUSE_MIN, held)))


def write_transaction(db: pw.Database | None = None):
    """A transaction that reads and then writes (``with write_transaction(): ...``).

    On SQLite in WAL mode such a transaction cannot wait for the write lock: when another
    connection (``txm serve`` storing samples) committed after its first read, its first write
    fails at once with "database is locked", whatever the busy timeout. Starting it with
    ``BEGIN IMMEDIATE`` takes the lock first and waits for it (up to the busy timeout) instead.
    PostgreSQL and MySQL lock rows as they go. ``db`` defaults to the bound database.
    """
    db = db if db is not None else database.obj
    if Dialect.of(db).kind == "sqlite":
        return db.atomic(lock_type="IMMEDIATE")
    return db.atomic()


class Checkpointer:
    """SQLite: copies the write-ahead log into the database file from a thread of its own with
    its own connection (a passive checkpoint: it never waits for or blocks the loop), at most
    every :data:`SQLITE_CHECKPOINT_SECONDS` and only after the loop committed something.

    Alone it could never let SQLite start the log afresh (the loop keeps adding to it), so the
    loop's connection still checkpoints every :data:`SQLITE_CHECKPOINT_PAGES` pages; by then
    little is left to copy, and the log restarts.
    """

    def __init__(self, path: str):
        self.path = path
        self.runs = 0
        self._committed = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="txm-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._committed.set()

    def stop(self) -> None:
        self._stopping.set()
        self._committed.set()
        self._thread.join(10)

    def _run(self) -> None:
        import sqlite3

        try:
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            log.warning("the WAL checkpointer could not open the database: %s", exc)
            return
        try:
            while not self._stopping.is_set():
                self._committed.wait()
                if self._stopping.wait(SQLITE_CHECKPOINT_SECONDS):
                    break
                self._committed.clear()
                try:
                    connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.runs += 1
                except sqlite3.Error as exc:  # the loop's own checkpoints go on regardless
                    log.debug("WAL checkpoint failed: %s", exc)
        finally:
            connection.close()
