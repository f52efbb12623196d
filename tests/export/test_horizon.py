"""Which samples an incremental export may take (txm.db.horizon), with real concurrent writers on
real PostgreSQL and MariaDB: a sample whose transaction commits late is waited for, never skipped,
by ``txm export-csv --since-last`` and by the LoggerNet Data Export server."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time

import pytest

from tests.conftest import closed_at_the_end
from tests.loggernet.test_data_export import LineClient, Running, server_settings
from tests.samples import store_samples
from txm import manage
from txm.db import schema
from txm.db.database import make_database
from txm.db.dialect import Dialect
from txm.db.horizon import Horizon
from txm.db.samples import SampleStore
from txm.errors import DatabaseError
from txm.export import csv as csv_export
from txm.loggernet.server import ExportServer

pytestmark = pytest.mark.server_databases

#: How long writer A holds its transaction open in the test of the issue (14, item 3).
HOLD_SECONDS = 10.0


class Writer:
    """Another connection to the test's database storing samples through txm's own insert path,
    as another txm node or the LoggerNet client does, in a transaction the test opens and ends."""

    def __init__(self, settings):
        self.db = make_database(settings)
        self.db.connect()
        self.conn = self.db.connection()  # the DB-API connection: a timer thread may end the transaction
        self.store = SampleStore(self.db)
        self.open = False

    def execute(self, sql: str, params=()):
        cursor = self.conn.cursor()
        cursor.execute(sql, params)
        return cursor

    def begin(self) -> None:
        self.execute("BEGIN")
        self.open = True

    def commit(self) -> None:
        self.execute("COMMIT")
        self.open = False

    def insert(self, code: str, when: dt.datetime, value: float) -> int:
        """Store one sample and return its id: in the open transaction, else committed at once."""
        alone = not self.open
        if alone:
            self.begin()
        unit = self.store.units([code])[code]
        self.store.insert_samples(unit, [(when, [value] * unit.channels)], schema.utcnow())
        d = Dialect.of(self.db)
        cursor = self.execute(f"SELECT {d.ident('id')} FROM {d.ident('sample')} WHERE {d.ident('unit_id')} = "
                              f"{d.param} AND {d.ident('timestamp')} = {d.param}", (unit.id, when))
        sample_id = cursor.fetchone()[0]
        if alone:
            self.commit()
        return sample_id

    def close(self) -> None:
        if self.open:
            self.execute("ROLLBACK")
        self.db.close()


@pytest.fixture
def writer(settings):
    """``writer()``: a :class:`Writer` on its own connection; every one is closed at the end."""
    with closed_at_the_end(lambda: Writer(settings)) as make:
        yield make


@pytest.fixture
def line_client():
    """``line_client(port)``: a LoggerNet Data Export client driven by hand, closed at the end."""
    with closed_at_the_end(LineClient) as connect:
        yield connect


@pytest.fixture
def units(database):
    manage.add_unit("M1", "k", 1)
    manage.add_unit("M2", "k", 1)
    # stored long ago: taken at once by the old 2-second settling too, which the test of the issue is run against
    store_samples(database, "M1", [(dt.datetime(2026, 1, 1), [1.0])], received=dt.datetime(2026, 1, 1))
    return database


def newest_id() -> int:
    return schema.Sample.select(schema.Sample.id).order_by(schema.Sample.id.desc()).limit(1).scalar()


def exported(folder) -> dict[str, list[str]]:
    """The data rows of each CODE.csv in ``folder``."""
    return {path.stem: path.read_text(encoding="utf-8").splitlines()[1:] for path in sorted(folder.glob("*.csv"))}


# --- the case: one writer holds its transaction open for 10 s ------------------------------


@pytest.mark.slow
def test_a_sample_committed_late_is_exported_once_and_never_skipped(units, writer, run_cli, settings, tmp_path,
                                                                     monkeypatch, line_client, caplog):
    """Writer A takes the smaller id and holds its transaction open for 10 s; writer B commits a
    larger id. Exports during the 10 s take neither (the cursor cannot pass A's id); the exports
    after A's commit take both, each once: by ``txm export-csv --since-last`` and by the LoggerNet
    Data Export server. (With the old 2-second settling, the export 3 s in moved past A's id.)"""
    monkeypatch.setattr(csv_export, "WAIT_SECONDS", 1.0, raising=False)  # a short wait, then it goes on
    run_cli("export-csv", "--all", "--since-last", "feed", "-o", str(tmp_path / "0"))
    assert exported(tmp_path / "0") == {"M1": ["2026-01-01 00:00:00,1.0"], "M2": []}
    with Running(ExportServer(server_settings(settings), units)) as server:
        client = line_client(server.port)
        old = client.record()
        assert b'"M1","Samples","2026-01-01 00:00:00"' in old
        client.send(f"M1,Samples,{newest_id()}\r\n".encode())
        wait_until(lambda: server.acknowledged == 1, "the old record's acknowledgement")

        a, b = writer(), writer()
        a.begin()
        held = time.monotonic()
        x = a.insert("M1", dt.datetime(2026, 1, 2), 2.0)
        y = b.insert("M2", dt.datetime(2026, 1, 3), 3.0)  # committed at once
        assert x < y
        time.sleep(3.0)  # longer than the old guess of 2 s

        with caplog.at_level(logging.WARNING, logger="txm.export"):
            run_cli("export-csv", "--all", "--since-last", "feed", "-o", str(tmp_path / "1"))
        assert exported(tmp_path / "1") == {"M1": [], "M2": []}, "an export took samples past an open transaction"
        cursors = {row.name: row.last_sample_id for row in schema.ExportCursor.select()}
        assert cursors["csv:feed"] < x, "the cursor moved past the id of a transaction still open"
        # (how many: writer A's, and on MariaDB any other connection caught running a statement)
        assert f"samples after id {cursors['csv:feed']} are left for the next run: " in caplog.text
        assert f"transaction(s) that may still store samples up to id {y} were open after 1 s" in caplog.text
        with pytest.raises(socket.timeout):
            client.record(timeout=1.0)  # B's record must wait behind A's

        time.sleep(max(0.0, HOLD_SECONDS - (time.monotonic() - held)))
        a.commit()

        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="txm.export"):
            run_cli("export-csv", "--all", "--since-last", "feed", "-o", str(tmp_path / "2"))
        assert "left for the next run" not in caplog.text
        assert exported(tmp_path / "2") == {"M1": ["2026-01-02 00:00:00,2.0"], "M2": ["2026-01-03 00:00:00,3.0"]}
        assert f'"{x}"'.encode() in (first := client.record()) and first.startswith(b'"M1"')
        client.send(f"M1,Samples,{x}\r\n".encode())
        assert f'"{y}"'.encode() in (second := client.record()) and second.startswith(b'"M2"')
        client.send(f"M2,Samples,{y}\r\n".encode())
        wait_until(lambda: server.acknowledged == 3, "both acknowledgements")
        run_cli("export-csv", "--all", "--since-last", "feed", "-o", str(tmp_path / "3"))
        assert exported(tmp_path / "3") == {"M1": [], "M2": []}


def wait_until(condition, what: str, timeout: float = 20.0, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


# --- the horizon itself --------------------------------------------------------------------------


def test_the_horizon_stops_below_an_open_transaction_without_waiting(units, writer):
    horizon = Horizon.of(units)
    assert Horizon.of(units) is horizon
    first = newest_id()
    assert horizon.settled() == first  # nothing open: every committed id is final at once
    a, b = writer(), writer()
    a.begin()
    x = a.insert("M1", dt.datetime(2026, 1, 2), 2.0)
    y = b.insert("M2", dt.datetime(2026, 1, 3), 3.0)
    started = time.monotonic()
    assert horizon.settled() == first < x < y
    assert csv_export.settled_last_id(units, first) == first
    assert horizon.wait(first, timeout=0.5) == first  # a bounded wait, then what is certainly final
    assert 0.5 <= time.monotonic() - started < 5
    a.commit()
    # MariaDB's list of transactions is refreshed once nobody has read it for 0.1 s: a look
    # just after another may not count, so "at once" is "within a few looks"
    assert horizon.wait(timeout=5) == y
    assert horizon.settled(y + 5) == y + 5


def test_an_export_waits_for_a_transaction_that_ends_within_its_bound(units, writer, tmp_path):
    a, b = writer(), writer()
    a.begin()
    x = a.insert("M1", dt.datetime(2026, 1, 2), 2.0)
    b.insert("M2", dt.datetime(2026, 1, 3), 3.0)
    threading.Timer(1.0, a.commit).start()
    started = time.monotonic()
    result = csv_export.export_csv(units, None, tmp_path, since_last="n", wait_seconds=20)
    assert 0.9 < time.monotonic() - started < 15
    assert result.last_id == newest_id() > x
    assert exported(tmp_path) == {"M1": ["2026-01-01 00:00:00,1.0", "2026-01-02 00:00:00,2.0"],
                                  "M2": ["2026-01-03 00:00:00,3.0"]}


def test_a_writer_waiting_for_a_lock_keeps_its_id_unsettled(units, writer, settings):
    """A sample insert waiting for a row lock (its foreign key's unit row, locked by an admin's
    open transaction) has its id already, and may wait a long time (a lock wait, as in the
    issue): the horizon stays below the larger id another writer commits meanwhile."""
    holder, b = writer(), writer()
    d = Dialect.of(units)
    horizon = Horizon.of(units)
    first = newest_id()
    assert horizon.settled() == first
    holder.begin()
    unit_id = schema.Unit.get(schema.Unit.code == "M1").id
    holder.execute(f"SELECT {d.ident('id')} FROM {d.ident('unit')} WHERE {d.ident('id')} = {d.param} FOR UPDATE",
                   (unit_id,))
    inserted: list[int] = []

    def insert_as_a():  # its own connection, in its own thread: the insert waits for the lock
        a = Writer(settings)
        try:
            inserted.append(a.insert("M1", dt.datetime(2026, 1, 2), 2.0))
        finally:
            a.close()

    blocked = threading.Thread(target=insert_as_a)
    blocked.start()
    # (MariaDB refreshes INNODB_LOCK_WAITS only once nobody has read it for 0.1 s)
    wait_until(lambda: lock_waits(units), "writer A to wait for the unit's row lock", every=0.3)
    y = b.insert("M2", dt.datetime(2026, 1, 3), 3.0)
    assert horizon.settled() == first < y
    holder.commit()
    blocked.join(20)
    assert inserted and first < inserted[0] < y
    assert horizon.wait(timeout=10) == y


def lock_waits(db) -> bool:
    """Whether some connection waits for a lock now."""
    if Dialect.of(db).kind == "postgresql":
        sql = "SELECT COUNT(*) FROM pg_locks WHERE NOT granted"
    else:
        sql = "SELECT COUNT(*) FROM information_schema.INNODB_LOCK_WAITS"
    return db.execute_sql(sql).fetchone()[0] > 0


@pytest.mark.backends("postgresql")
def test_postgresql_a_value_taken_before_the_transaction_has_an_xid(units, writer, backend):
    """``nextval()`` runs before the inserting transaction gets an xid: a snapshot taken then
    does not list it, and its row's xmin will be above that snapshot's xmin, so "rows whose
    xmin is below the snapshot's xmin are final" would take B's larger id and skip A's. The
    horizon waits for every transaction holding the id sequence's lock."""
    a, b = writer(), writer()
    horizon = Horizon.of(units)
    first = newest_id()
    assert horizon.settled() == first
    for _ in range(64):  # nextval() gets an xid once every 32 values (when it logs the sequence)
        a.begin()
        x = a.execute("SELECT nextval(pg_get_serial_sequence('sample', 'id'))").fetchone()[0]
        if a.execute("SELECT txid_current_if_assigned()").fetchone()[0] is None:
            break
        a.execute("ROLLBACK")
    else:
        pytest.fail("nextval() assigned an xid every time")
    y = b.insert("M2", dt.datetime(2026, 1, 3), 3.0)
    snapshot_xmin, b_xmin = units.execute_sql(
        "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, xmin::text::bigint FROM sample WHERE id = %s",
        (y,)).fetchone()
    assert b_xmin < snapshot_xmin  # B is below every open xid: A is not in the snapshot at all
    assert horizon.settled() == first < x < y
    a.execute("INSERT INTO sample (id, unit_id, timestamp, received) VALUES (%s, %s, %s, %s)",
              (x, schema.Unit.get(schema.Unit.code == "M1").id, dt.datetime(2026, 1, 2), schema.utcnow()))
    assert horizon.settled() == first
    a.commit()
    assert horizon.settled() == y


@pytest.mark.backends("mysql")
def test_mariadb_without_the_process_privilege_is_a_clear_error(units, settings, backend, caplog):
    user = f"txm_np_{settings.DATABASE_NAME[-8:]}"
    units.execute_sql(f"CREATE USER '{user}'@'%%' IDENTIFIED BY 'secret'")
    try:
        units.execute_sql(f"GRANT ALL ON `{settings.DATABASE_NAME}`.* TO '{user}'@'%%'")
        limited = make_database(settings.replace(DATABASE_USER=user, DATABASE_PASSWORD="secret"))
        limited.connect()
        try:
            with pytest.raises(DatabaseError, match="need the PROCESS privilege .* GRANT PROCESS ON"):
                Horizon(limited).settled()
            with pytest.raises(DatabaseError, match="PROCESS privilege"):
                csv_export.wait_settled(limited, 0)
            # the LoggerNet server's poll: said once, nothing taken, no exception
            with caplog.at_level(logging.ERROR, logger="txm.export"):
                assert csv_export.settled_last_id(limited, 0) == 0
                assert csv_export.settled_last_id(limited, 0) == 0
            messages = [r.getMessage() for r in caplog.records if r.name == "txm.export"]
            assert len(messages) == 1 and "PROCESS privilege" in messages[0]
        finally:
            limited.close()
    finally:
        units.execute_sql(f"DROP USER '{user}'@'%%'")


@pytest.mark.backends("mysql")
def test_mariadb_a_connection_running_a_statement_is_waited_for(units, writer, settings, backend):
    """InnoDB hands out an AUTO_INCREMENT value before the statement's transaction starts, so a
    connection running a statement counts although INNODB_TRX does not list it yet: until the
    statement ends, and then until the transaction it began (if still open) ends."""
    horizon = Horizon.of(units)
    first = newest_id()
    assert horizon.settled() == first
    inserted, commit = threading.Event(), threading.Event()
    ids: list[int] = []

    def writer_c():  # its own connection, in its own thread: its statement keeps the thread
        c = Writer(settings)
        try:
            c.begin()
            c.execute("SELECT SLEEP(2)")  # running, and no InnoDB transaction yet
            ids.append(c.insert("M1", dt.datetime(2026, 1, 2), 2.0))
            inserted.set()
            commit.wait(20)
            c.commit()
        finally:
            c.close()

    thread = threading.Thread(target=writer_c)
    thread.start()
    try:
        wait_until(lambda: units.execute_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST "
                                             "WHERE INFO LIKE 'SELECT SLEEP%%'").fetchone()[0], "C's statement")
        y = writer().insert("M2", dt.datetime(2026, 1, 3), 3.0)
        assert horizon.wait(timeout=0.5) == first < y  # several looks while C's statement runs
        assert not inserted.is_set()
        assert inserted.wait(20)
        assert horizon.wait(timeout=1.0) == first  # the statement ended; its transaction is open
        assert ids[0] > y
    finally:
        commit.set()
        thread.join(20)
    assert horizon.wait(timeout=5) == ids[0]
