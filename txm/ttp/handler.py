"""TTP business logic: the verb table, unit authentication and group commit.

The loop hands the handler every complete request of one pass (:meth:`Handler.handle`); the
handler runs them all in one database transaction and returns one reply per request.

Verbs
-----
A verb is a function ``verb(call: Call) -> str`` returning the reply line without its CR
(``"OK"``, ``"OK <...>"``), or raising :class:`~txm.ttp.parser.ProtocolError` with a TTP code
(``raise ProtocolError(400, "why, for the log")``). It receives a :class:`Call`:

* ``call.request`` -- the parsed request: ``verb``, ``code`` (unit code), ``argument`` (the text
  between ``/<code>/`` and the key) and ``key``;
* ``call.unit()`` -- the unit named by the request, authenticated: ``405 Unit Not Found`` when
  there is none, ``402 Unauthorized`` when the key is wrong (constant-time compare through
  :func:`keys_match`). A code or key changed by any other database connection (admin panel,
  ``txm unit``, another node) takes effect at the next request (see
  :meth:`~txm.db.samples.SampleStore.units_for_pass`); a verb should not change units itself;
* ``call.db`` -- the peewee database, inside the pass's transaction. Write with peewee or SQL
  as usual: it is committed with the pass, before any ``OK`` goes out when ``COMMIT_INTERVAL``
  is 1. Each call runs in its own savepoint, so a failing call leaves nothing behind and never
  harms the other calls of the pass (a built-in verb marked ``ttp_single_statement``, whose
  one statement either works or changes nothing, skips the savepoint on SQLite and
  PostgreSQL; should that statement fail on PostgreSQL, the pass is rolled back and answered
  again one request per transaction);
* ``call.received`` -- the pass's time (naive UTC), ``call.settings``, ``call.log``;
* ``call.after_commit(fn)`` -- run ``fn()`` once the pass is committed;
  ``call.announce(event)`` -- run what others registered for ``event`` then (see below).

A verb that never writes says so with ``verb.ttp_writes_nothing = True`` (``dl`` does): a pass
of such requests (and unknown verbs) does not wait for SQLite's write lock.

A verb may also answer several requests at once: ``verb.ttp_batch(calls) -> list`` receives
consecutive calls of the verb for *different* units and returns, per call, the reply text or
the :class:`~txm.ttp.parser.ProtocolError` to answer with; it sets ``call.wrote`` for calls
that wrote. The batch runs in one savepoint; if it raises, nothing of it is kept and each call
goes to ``verb`` alone. The upload verb uses this to put the one-sample uploads of a pass
into one multi-row INSERT.

Where verbs come from
---------------------
* Built-in verbs: the table :data:`txm.ttp.verbs.BUILTIN_VERBS` (``up``, ``dl``, ``al``).
* TTP Apps (:mod:`txm.ttp.apps`): a module named after its verb, defining ``handle(call)``,
  switched on in ``[ttpapps]``.

Telling others about a commit
-----------------------------
``call.announce(event)`` asks for the callbacks registered with :meth:`Handler.on_commit` for
``event`` to run once the pass is committed: the alarm verb announces ``"alarm"``, and
``txm serve`` registers the email worker's wake-up for it.

An exception other than ProtocolError is logged with its traceback and answered with
``500 Internal error``; the server keeps serving.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import random
import time
from typing import Any, Callable, Mapping

import peewee as pw

from txm.config import Settings
from txm.db.samples import SampleStore, UnitRecord
from txm.db.schema import utcnow
from txm.db.sqlite import SQLITE_CHECKPOINT_PAGES, Checkpointer
from txm.logs import RateLimitedLog
from txm.ttp.parser import ProtocolError, Request, error_reply

log = logging.getLogger("txm.ttp")

Verb = Callable[["Call"], str]

#: Seconds an uncommitted upload may wait when COMMIT_INTERVAL is more than 1.
MAX_COMMIT_DELAY = 1.0
#: Most requests handed to a verb's batch function at once.
BATCH_LIMIT = 500
#: Attempts at one request, in a transaction of its own, after its pass met a lock conflict.
CONFLICT_ATTEMPTS = 6
#: While writes fail (a full disk), seconds between the log's summaries of what was refused.
FAILURE_SUMMARY_SECONDS = 10.0

#: Error codes of a transaction that lost a lock conflict with another database session:
#: PostgreSQL SQLSTATEs (deadlock, serialization failure, lock not available) and MySQL error
#: numbers (deadlock, lock wait timeout).
_PG_CONFLICTS = frozenset({"40P01", "40001", "55P03"})
_MYSQL_CONFLICTS = frozenset({1213, 1205})
#: Errors of a database that cannot store anything now, whatever the statement: SQLite's primary
#: result codes (out of memory, read-only, I/O error, corrupt, full, cannot open), PostgreSQL's
#: SQLSTATE classes (connection exception, insufficient resources, system error) and MySQL's error
#: numbers (error writing a file, disk full, table full, server gone away, connection lost).
_SQLITE_FAILURES = frozenset({7, 8, 10, 11, 13, 14})
_PG_FAILURE_CLASSES = frozenset({"08", "53", "58"})
_MYSQL_FAILURES = frozenset({3, 1021, 1114, 2006, 2013})

OK = "OK"


def keys_match(given: str, stored: str) -> bool:
    """Compare a unit key in constant time."""
    return hmac.compare_digest(given.encode("utf-8"), (stored or "").encode("utf-8"))


class LockConflict(Exception):
    """Another database session (another txm node) holds rows this pass needs and waits for ours."""


class PassAborted(Exception):
    """A statement without a savepoint failed on PostgreSQL, which then refuses every further
    statement of the transaction: the pass is redone one request at a time."""


def _causes(exc: BaseException | None):
    """``exc`` and what it wraps (peewee wraps a driver's exception as its first argument)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        args = getattr(exc, "args", ())
        exc = args[0] if args and isinstance(args[0], BaseException) else (exc.__cause__ or exc.__context__)


def is_lock_conflict(exc: BaseException | None) -> bool:
    """True when ``exc`` (or what it wraps) is a deadlock or lock timeout from the database."""
    for cause in _causes(exc):
        if getattr(cause, "pgcode", None) in _PG_CONFLICTS:
            return True
        args = getattr(cause, "args", ())
        if args and isinstance(args[0], int) and args[0] in _MYSQL_CONFLICTS:
            return True
    return False


def is_storage_failure(exc: BaseException | None) -> bool:
    """True when ``exc`` says the database cannot store anything now (a full disk, an I/O
    error, a lost connection), rather than that one statement was wrong."""
    for cause in _causes(exc):
        code = getattr(cause, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _SQLITE_FAILURES:
            return True
        pgcode = getattr(cause, "pgcode", None)
        if pgcode and pgcode[:2] in _PG_FAILURE_CLASSES:
            return True
        if type(cause).__module__.startswith("psycopg2") and type(cause).__name__ in (
                "OperationalError", "InterfaceError") and not pgcode:
            return True  # the connection to the server is gone
        args = getattr(cause, "args", ())
        if type(cause).__module__.startswith("pymysql") and args and args[0] in _MYSQL_FAILURES:
            return True
    return False


class Call:
    """One request being answered; what a verb function receives."""

    __slots__ = ("request", "handler", "received", "_unit", "wrote")

    def __init__(self, request: Request, handler: "Handler", received: dt.datetime):
        self.request = request
        self.handler = handler
        self.received = received
        self._unit: UnitRecord | None = None
        self.wrote = False

    @property
    def db(self) -> pw.Database:
        return self.handler.db

    @property
    def settings(self) -> Settings:
        return self.handler.settings

    @property
    def store(self) -> SampleStore:
        return self.handler.store

    @property
    def log(self) -> logging.Logger:
        return log

    def unit(self) -> UnitRecord:
        """The request's unit, authenticated by its key (405 / 402 otherwise)."""
        if self._unit is None:
            unit = self.handler.unit_for(self.request.code)
            if unit is None:
                raise ProtocolError(405, f"no unit with code {self.request.code!r}")
            if not keys_match(self.request.key, unit.key):
                raise ProtocolError(402, f"wrong key for unit {unit.code!r}")
            self._unit = unit
        return self._unit

    def after_commit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn()`` after the pass's transaction is committed (not at all if it fails)."""
        self.handler._after_commit.append(fn)

    def announce(self, event: str) -> None:
        """Run the callbacks registered for ``event`` (:meth:`Handler.on_commit`) after the commit."""
        self.handler._after_commit.extend(self.handler._listeners.get(event, ()))


# --- the handler -------------------------------------------------------------------------------


class WriteFailures:
    """What the log says while the database refuses writes: the first failure with its
    traceback, then a summary every :data:`FAILURE_SUMMARY_SECONDS`, then the recovery."""

    def __init__(self) -> None:
        self.since: float | None = None  # monotonic time of the first failure of this spell
        self.last_try = 0.0
        self.refused = 0  # requests answered 500 during this spell
        self._refused_at_summary = 0
        self._next_summary = 0.0

    def failed(self, exc: BaseException, refused: int, kept: int) -> None:
        now = time.monotonic()
        self.last_try = now
        self.refused += refused
        if self.since is None:
            self.since = now
            self._next_summary = now + FAILURE_SUMMARY_SECONDS
            log.error("the database refuses writes (%s: %s); answering 500 to new requests and keeping the "
                      "%d acknowledged one(s) not yet committed, to write again once it takes them",
                      type(exc).__name__, str(exc).strip().splitlines()[0] if str(exc).strip() else "",
                      kept, exc_info=exc)
        elif now >= self._next_summary:
            log.error("the database still refuses writes after %.0f s (%s): %d request(s) answered 500 in "
                      "the last %.0f s; %d acknowledged kept to write again", now - self.since, exc,
                      self.refused - self._refused_at_summary, FAILURE_SUMMARY_SECONDS, kept)
            self._refused_at_summary = self.refused
            self._next_summary = now + FAILURE_SUMMARY_SECONDS

    def recovered(self) -> None:
        assert self.since is not None
        log.warning("the database takes writes again after %.1f s: %d request(s) were answered 500 meanwhile, "
                    "and every acknowledged one is stored", time.monotonic() - self.since, self.refused)
        self.since = None
        self.refused = self._refused_at_summary = 0


class Handler:
    """Answers batches of requests with group commit.

    ``COMMIT_INTERVAL`` 1: :meth:`handle` commits before it returns, so every reply it returns
    is durable. N > 1: the transaction stays open; it is committed once N calls wrote, after
    :data:`MAX_COMMIT_DELAY` seconds (:meth:`tick`), and by :meth:`flush` / :meth:`close`.
    """

    def __init__(self, settings: Settings, database: pw.Database, verbs: Mapping[str, Verb]):
        self.settings = settings
        self.db = database
        self.verbs = dict(verbs)
        self.store = SampleStore(database)
        self.commit_interval = settings.COMMIT_INTERVAL
        self._sqlite = self.store.kind == "sqlite"
        # Single-statement verbs run without a savepoint of their own where a failed statement
        # can be survived: SQLite undoes just the statement; PostgreSQL aborts the transaction,
        # and the pass is then redone one request at a time (PassAborted). MySQL keeps them.
        self._savepoint_free = self.store.kind in ("sqlite", "postgresql")
        self._alone_mode = False  # answering one request per transaction, every call in a savepoint
        self.checkpointer: Checkpointer | None = None  # SQLite, from open() to close()
        self._txn: Any = None
        self._txn_started = 0.0
        self._pending_writes = 0
        self._units: dict[str, UnitRecord] = {}
        self._after_commit: list[Callable[[], Any]] = []
        self._listeners: dict[str, list[Callable[[], Any]]] = {}
        self._uncommitted: list[tuple[Request, dt.datetime]] = []  # answered, not yet committed
        # Writes of requests answered OK whose commit failed: written again, before anything
        # else, by every following pass until a commit succeeds (see _held_back).
        self.backlog: list[tuple[Request, dt.datetime]] = []
        self.failures = WriteFailures()
        self.refusals = RateLimitedLog(log, "refused request(s)")
        self.requests_handled = 0

    def on_commit(self, event: str, callback: Callable[[], Any]) -> None:
        """Call ``callback()`` after every commit of a pass in which a verb announced ``event``
        (``call.announce(event)``), e.g. wake the email worker when an alarm was stored."""
        self._listeners.setdefault(event, []).append(callback)

    # --- connection and transaction ----------------------------------------------------------

    def open(self) -> None:
        """Connect in the calling thread (the loop's)."""
        if self.db.is_closed():
            self.db.connect()
            if self._sqlite:
                self.db.execute_sql(f"PRAGMA wal_autocheckpoint = {SQLITE_CHECKPOINT_PAGES}")
                if self.checkpointer is None:
                    self.checkpointer = Checkpointer(self.db.database)

    def _begin(self, write: bool = True) -> None:
        if self._txn is None:
            self.open()
            # SQLite: a pass that may write takes the write lock at BEGIN, so its first write
            # never fails on a snapshot another process committed after its first read; a pass
            # that only reads does not wait for the lock (another process may hold it for long).
            txn = self.db.transaction(lock_type="IMMEDIATE" if write else "DEFERRED") if self._sqlite \
                else self.db.transaction()
            txn.__enter__()
            self._txn = txn
            self._txn_started = time.monotonic()

    def _may_write(self, requests: list[Request]) -> bool:
        """Whether a verb of the pass may write: not when each is a reader (``ttp_writes_nothing``,
        like ``dl``) or unknown (answered 501)."""
        verbs = self.verbs
        for request in requests:
            verb = verbs.get(request.verb)
            if verb is not None and not getattr(verb, "ttp_writes_nothing", False):
                return True
        return False

    def _commit(self) -> None:
        txn, self._txn = self._txn, None
        self._pending_writes = 0
        callbacks, self._after_commit = self._after_commit, []
        if txn is not None:
            try:
                txn.__exit__(None, None, None)  # commits; rolls back and raises on failure
            except BaseException:
                self._txn = None
                raise  # _uncommitted still holds what the failed commit took: the caller keeps it
            if self.checkpointer is not None:
                self.checkpointer.committed()
        self._uncommitted = []
        for fn in callbacks:
            try:
                fn()
            except Exception:
                log.exception("an after-commit action failed")

    def _abandon(self) -> None:
        """Roll back after a failure of the whole pass; reconnect on the next one."""
        self.store.forget_units()
        self._rollback()
        self._uncommitted = []
        self._after_commit = []
        try:
            self.db.close()
        except Exception:
            log.debug("closing the database failed", exc_info=True)

    def _rollback(self) -> None:
        """Roll the open transaction back (what it wrote is gone); keep the connection."""
        txn, self._txn = self._txn, None
        self._pending_writes = 0
        self._after_commit = []
        try:
            if txn is not None:
                txn.__exit__(RuntimeError, RuntimeError("rolled back"), None)
        except Exception:
            log.debug("rollback failed", exc_info=True)

    # --- answering ---------------------------------------------------------------------------

    def unit_for(self, code: str) -> UnitRecord | None:
        return self._units.get(code)

    def handle(self, requests: list[Request]) -> list[str]:
        """Answer the requests of one pass, in order; commit per ``COMMIT_INTERVAL``.

        While an earlier commit's writes wait in :attr:`backlog` (the database refused them: a
        full disk, an I/O error), they are written again first and the pass is committed before
        it is answered, whatever ``COMMIT_INTERVAL`` says: nothing more is acknowledged until
        the database takes writes again. If that commit fails too, the pass is answered 500.
        """
        if not requests:
            return []
        self.requests_handled += len(requests)
        received = utcnow()
        recovering = bool(self.backlog)
        if not recovering and self._txn is None and not self._may_write(requests):
            return self._read(requests, received)
        earlier = len(self._uncommitted)  # answered in earlier passes, not yet committed
        try:
            try:
                self._begin()
                if recovering:
                    self._replay_backlog()
                    earlier = len(self._uncommitted)
                self._units = self.store.units_for_pass({r.code for r in requests})
                replies = self._answer(requests, received)
                if recovering or self.commit_interval <= 1 or self._pending_writes >= self.commit_interval or (
                        time.monotonic() - self._txn_started >= MAX_COMMIT_DELAY):
                    self._commit()
                    self._backlog_stored()
            except (LockConflict, PassAborted) as exc:
                replies = self._one_by_one(requests, received, exc, earlier)
        except Exception as exc:
            # Kept: what was acknowledged and not yet committed; never this pass's own writes,
            # which are answered 500 (the meter sends them again).
            self._failed(exc, len(requests), self.backlog if recovering else self._uncommitted[:earlier])
            return [error_reply(500)] * len(requests)
        finally:
            self._units = {}
        return replies

    def _read(self, requests: list[Request], received: dt.datetime) -> list[str]:
        """A pass that writes nothing: in a read transaction of its own (no write lock to wait
        for), or in none when no verb is known."""
        if all(request.verb not in self.verbs for request in requests):
            return [self._call(request, received) for request in requests]
        try:
            self._begin(write=False)
            self._units = self.store.units_for_pass({r.code for r in requests})
            replies = [self._call(request, received) for request in requests]
            self._commit()
        except Exception as exc:
            self._failed(exc, len(requests), [])
            return [error_reply(500)] * len(requests)
        finally:
            self._units = {}
        return replies

    def _replay_backlog(self) -> None:
        """Write again, in the open transaction, what was acknowledged but never committed."""
        backlog = self.backlog
        self._units = self.store.units_for_pass({request.code for request, _ in backlog})
        for request, when in backlog:
            self._call(request, when)  # appends it to _uncommitted again: kept if this fails too

    def _failed(self, exc: BaseException, refused: int, acknowledged: list[tuple[Request, dt.datetime]]) -> None:
        """A transaction failed: keep what was acknowledged for the next pass to write again,
        drop the connection (SQLite may have left it unusable after an I/O error), and tell
        the log -- loudly the first time, then in summaries."""
        self._abandon()
        self.backlog = list(acknowledged)
        self.failures.failed(exc, refused, len(self.backlog))

    def _backlog_stored(self) -> None:
        """A commit that held the whole backlog went through."""
        self.backlog = []
        if self.failures.since is not None:
            self.failures.recovered()

    def _one_by_one(self, requests: list[Request], received: dt.datetime, why: Exception,
                    earlier: int) -> list[str]:
        """After a lock conflict with another node, or a failed statement that aborted the
        transaction (PostgreSQL): roll the pass back, then answer each request in a transaction
        of its own, so no transaction of ours holds rows while it waits.

        The rollback also takes the writes of earlier passes already answered but not yet
        committed (``COMMIT_INTERVAL`` > 1, the first ``earlier`` of :attr:`_uncommitted`):
        those are written again first. This pass's own are not: they are answered afresh.
        """
        if isinstance(why, LockConflict):
            log.info("lock conflict with another database session; answering %d request(s) one by one",
                     len(requests))
        else:
            log.info("a statement of this pass failed; answering its %d request(s) one by one", len(requests))
        replay, self._uncommitted = self._uncommitted[:earlier], []
        self._rollback()
        self._alone_mode = True
        try:
            for request, when in replay:
                self._alone(request, when)
            if self.backlog:
                self._backlog_stored()
            return [self._alone(request, received) for request in requests]
        finally:
            self._alone_mode = False

    def _alone(self, request: Request, received: dt.datetime) -> str:
        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                self._begin()
                self._units = self.store.units_for_pass({request.code})
                reply = self._call(request, received)
                self._commit()
                return reply
            except LockConflict:
                self._rollback()
                time.sleep(random.uniform(0, 0.005 * attempt))  # let the other session finish
        log.error("%s: 500 (still in a lock conflict after %d attempts)", request.describe(), CONFLICT_ATTEMPTS)
        return error_reply(500)

    def _answer(self, requests: list[Request], received: dt.datetime) -> list[str]:
        """Answer the requests in order; consecutive requests of a verb with a batch function
        (``verb.ttp_batch``) and of different units go to it together, at most
        :data:`BATCH_LIMIT` at a time. A unit that comes again starts a new batch, so each
        request still sees what the ones before it wrote."""
        replies: list[str] = []
        verbs = self.verbs
        count = len(requests)
        i = 0
        while i < count:
            request = requests[i]
            batch = getattr(verbs.get(request.verb), "ttp_batch", None)
            j = i + 1
            if batch is not None:
                codes = {request.code}
                limit = min(count, i + BATCH_LIMIT)
                while j < limit and requests[j].verb == request.verb and requests[j].code not in codes:
                    codes.add(requests[j].code)
                    j += 1
            if j - i == 1:
                replies.append(self._call(request, received))
            else:
                replies.extend(self._call_batch(batch, requests[i:j], received))
            i = j
        return replies

    def _call_batch(self, batch: Callable[[list[Call]], list], requests: list[Request],
                    received: dt.datetime) -> list[str]:
        """Answer requests through their verb's batch function, in one savepoint; when it fails,
        nothing of it is kept and the requests are answered one at a time instead."""
        calls = [Call(request, self, received) for request in requests]
        cursor = self.db.cursor()
        cursor.execute("SAVEPOINT txm_batch")
        try:
            outcomes = batch(calls)
            if len(outcomes) != len(calls):
                raise TypeError(f"a batch of {len(calls)} request(s) gave {len(outcomes)} answer(s)")
            cursor.execute("RELEASE SAVEPOINT txm_batch")
        except Exception as exc:
            if is_lock_conflict(exc):
                raise LockConflict() from exc  # the whole pass is redone, see _one_by_one
            if is_storage_failure(exc):
                raise  # the database itself fails: the whole pass does
            self._undo(cursor, "txm_batch")
            log.warning("a batch of %d request(s) failed (%s: %s); answering them one at a time",
                        len(calls), type(exc).__name__, exc)
            return [self._call(request, received) for request in requests]
        replies = []
        for call, outcome in zip(calls, outcomes):
            if isinstance(outcome, ProtocolError):
                self._log_protocol_error(call.request, outcome)
                outcome = outcome.reply()
            replies.append(outcome)
            if call.wrote:
                self._pending_writes += 1
                if self.commit_interval > 1:
                    self._uncommitted.append((call.request, received))
        return replies

    def _log_protocol_error(self, request: Request, exc: ProtocolError) -> None:
        self.refusals.event((exc.code, request.code), logging.DEBUG if exc.code in (404, 406) else logging.INFO,
                              "%s: %d %s", request.describe(), exc.code, exc.reason or exc.args[0])

    def _call(self, request: Request, received: dt.datetime) -> str:
        verb = self.verbs.get(request.verb)
        if verb is None:
            self.refusals.event((501, request.verb), logging.INFO, "%s: 501 (no verb %r)", request.describe(),
                                  request.verb)
            return error_reply(501)
        call = Call(request, self, received)
        savepoint = self._alone_mode or not (self._savepoint_free and getattr(verb, "ttp_single_statement", False))
        cursor = self.db.cursor() if savepoint else None
        try:
            if cursor is not None:
                cursor.execute("SAVEPOINT txm_call")
            reply = verb(call)
            if not isinstance(reply, str):
                raise TypeError(f"verb {request.verb!r} returned {type(reply).__name__}, not the reply text")
            if "\r" in reply or "\n" in reply:  # one reply is one line
                reply = reply.replace("\r", " ").replace("\n", " ")
            if cursor is not None:
                cursor.execute("RELEASE SAVEPOINT txm_call")
        except ProtocolError as exc:
            if exc.code == 406:  # the other samples of the request stay stored
                if cursor is not None:
                    cursor.execute("RELEASE SAVEPOINT txm_call")
            else:
                if cursor is not None:
                    self._undo(cursor)
                call.wrote = False
            self._log_protocol_error(request, exc)
            reply = exc.reply()
        except Exception as exc:
            if is_lock_conflict(exc):
                raise LockConflict() from exc  # the whole pass is redone, see _one_by_one
            if is_storage_failure(exc):
                raise  # the database itself fails (a full disk, a lost connection): the whole pass does
            if cursor is None and not self._sqlite:
                raise PassAborted() from exc  # the whole pass is redone, see _one_by_one
            if cursor is not None:
                self._undo(cursor)
            call.wrote = False
            log.exception("%s: 500 Internal error", request.describe())
            reply = error_reply(500)
        if call.wrote:
            self._pending_writes += 1
            if self.commit_interval > 1:
                self._uncommitted.append((request, received))
        return reply

    def _undo(self, cursor, savepoint: str = "txm_call") -> None:
        cursor.execute(f"ROLLBACK TO SAVEPOINT {savepoint}")
        cursor.execute(f"RELEASE SAVEPOINT {savepoint}")

    # --- COMMIT_INTERVAL > 1 ---------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """Monotonic time by which :meth:`tick` must run, or None when nothing waits."""
        if self._txn is not None:
            return self._txn_started + MAX_COMMIT_DELAY
        if self.backlog:
            return self.failures.last_try + MAX_COMMIT_DELAY
        return None

    def tick(self) -> None:
        """Commit an open transaction that has waited long enough; while writes fail, try the
        backlog again about once a second even when no meter sends anything."""
        now = time.monotonic()
        if self._txn is not None and now - self._txn_started >= MAX_COMMIT_DELAY:
            self.flush()
        elif self._txn is None and self.backlog and now - self.failures.last_try >= MAX_COMMIT_DELAY:
            self.flush()

    def flush(self) -> None:
        """Commit whatever is pending now (the backlog of failed commits included)."""
        if self._txn is None and not self.backlog:
            return
        acknowledged = self.backlog or self._uncommitted  # while writes fail, no transaction stays open
        try:
            if self._txn is None:
                self._begin()
                self._replay_backlog()
            self._commit()
            self._backlog_stored()
        except Exception as exc:
            self._failed(exc, 0, acknowledged)
        finally:
            self._units = {}

    def close(self) -> None:
        """Flush pending commits, stop the checkpointer and close this thread's connection."""
        self.flush()
        if self.backlog:
            log.error("stopping with %d acknowledged request(s) the database would not take: their "
                      "writes are lost", len(self.backlog))
        if self.checkpointer is not None:
            self.checkpointer.stop()
            self.checkpointer = None
        try:
            self.db.close()
        except Exception:
            log.debug("closing the database failed", exc_info=True)
