"""LoggerNet Data Export over real sockets: txm's export server, txm's pull client, and the two
together, on every database backend."""

from __future__ import annotations

import datetime as dt
import logging
import re
import signal
import socket
import subprocess
import threading
import time

import peewee as pw
import pytest

from tests.conftest import TXM, closed_at_the_end, fail_the_database, txm_subprocess_env
from tests.samples import store_samples
from txm import config, manage
from txm.db import schema
from txm.db.database import close_quietly
from txm.errors import ConfigError
from txm.loggernet import records
from txm.loggernet.client import PullClient, parse_unit_map
from txm.loggernet.server import CURSOR_NAME, MAX_ACK_BYTES, ExportServer
from txm.net import listen

LONG_AGO = dt.datetime(2026, 1, 1)  # "received": any time will do (what is final depends on open transactions)
WAIT = 20.0


def wait_for(condition, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Running:
    """A server or client object run in a thread until the block ends."""

    def __init__(self, worker):
        self.worker = worker
        self.stop = threading.Event()
        self.thread = threading.Thread(target=worker.run, args=(self.stop,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self.worker

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(15)
        assert not self.thread.is_alive(), "the worker did not stop"


def server_settings(settings, **values):
    base = {"BIND_ADDRESS": "127.0.0.1", "EXPORT_PORT": 0, "EXPORT_RESEND_SECONDS": 0.4,
            "EXPORT_UNITS": ["M1", "M2"]}
    base.update(values)
    return settings.replace(**base)


def client_settings(settings, port: int, **values):
    base = {"LOGGERNET_HOST": "127.0.0.1", "LOGGERNET_PORT": port, "LOGGERNET_WATCHDOG_SECONDS": 30.0}
    base.update(values)
    return settings.replace(**base)


class LineClient:
    """A hand-driven Data Export client: read records, send whatever acknowledgement we like.
    ``source`` is the loopback address it connects from (127.0.0.2 is another client machine)."""

    def __init__(self, port: int, source: str = "127.0.0.1"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT, source_address=(source, 0))
        self.buffer = b""

    def record(self, timeout: float = WAIT) -> bytes:
        self.sock.settimeout(timeout)
        while b"\r\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the server closed the connection")
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def line_client():
    """``line_client(port, source="127.0.0.1")``: a :class:`LineClient` connected to 127.0.0.1:port;
    every one opened is closed at the end of the test."""
    with closed_at_the_end(LineClient) as connect:
        yield connect


@pytest.fixture
def source_units(database):
    manage.add_unit("M1", "k", 2, labels="Flow,Level")
    manage.add_unit("M2", "k", 1)
    manage.add_unit("M3", "k", 1)  # not in EXPORT_UNITS
    store_samples(database, "M1", [(dt.datetime(2026, 1, 1, 0, 0, i, 250000 * i), [i * 1.5, None if i == 1 else -i])
                                   for i in range(3)], received=LONG_AGO)
    store_samples(database, "M3", [(dt.datetime(2026, 1, 1), [3.0])], received=LONG_AGO)
    store_samples(database, "M2", [(dt.datetime(2026, 1, 2), [0.1])], received=LONG_AGO)
    return database


def sample_ids(code: str) -> list[int]:
    return [s.id for s in schema.Sample.select().join(schema.Unit).where(schema.Unit.code == code)
            .order_by(schema.Sample.id)]


def samples_of(code: str) -> list[tuple]:
    unit = schema.Unit.get(schema.Unit.code == code)
    return [(s.timestamp, *[getattr(s, f"ch{i}") for i in range(1, unit.channels + 1)])
            for s in schema.Sample.select().where(schema.Sample.unit == unit).order_by(schema.Sample.timestamp)]


def cursor_value() -> int | None:
    row = schema.ExportCursor.get_or_none(schema.ExportCursor.name == CURSOR_NAME)
    return row.last_sample_id if row else None


# --- the export server, driven by hand ---------------------------------------------------------


def test_server_sends_records_in_id_order_and_advances_only_on_the_right_ack(settings, source_units, line_client):
    ids = sample_ids("M1") + sample_ids("M2")
    with Running(ExportServer(server_settings(settings), source_units)) as server:
        client = line_client(server.port)
        first = client.record()
        assert first == (f'"M1","Samples","2026-01-01 00:00:00","{ids[0]}","Flow","FLOAT","0.0",'
                         f'"Level","FLOAT","0.0"\r\n').encode()
        # a wrong acknowledgement and a line that is none are ignored: the same record comes again
        client.send(f"M1,Samples,{ids[0] + 1000}\r\nM9,Samples,{ids[0]}\r\nnonsense\r\n".encode())
        assert client.record() == first
        assert cursor_value() == 0
        client.send(f"M1,Samples,{ids[0]}\r\n".encode())
        second = client.record()
        assert second == (f'"M1","Samples","2026-01-01 00:00:01.25","{ids[1]}","Flow","FLOAT","1.5",'
                          f'"Level","FLOAT","NAN"\r\n').encode()
        wait_for(lambda: cursor_value() == ids[0], what="the cursor to advance")
        client.send(f"M1,Samples,{ids[1]}\r\n".encode())
        assert client.record().startswith(b'"M1","Samples","2026-01-01 00:00:02.5"')
        client.send(f"M1,Samples,{ids[2]}\r\n".encode())
        assert client.record() == f'"M2","Samples","2026-01-02 00:00:00","{ids[3]}","ch1","FLOAT","0.1"\r\n'.encode()
        client.send(f"M2,Samples,{ids[3]}\r\n".encode())
        wait_for(lambda: server.acknowledged == 4, what="four acknowledgements")
        # M3 is not exported; a new M1 sample is sent as it comes
        store_samples(source_units, "M1", [(dt.datetime(2026, 2, 1), [9.0, 9.5])], received=LONG_AGO)
        assert client.record().startswith(b'"M1","Samples","2026-02-01 00:00:00"')
    assert cursor_value() == ids[3]


def test_server_rtms_format_and_resend_after_the_timeout(settings, source_units, line_client):
    ids = sample_ids("M1")
    with Running(ExportServer(server_settings(settings, EXPORT_FORMAT="rtms", EXPORT_TABLE="Sec15"),
                              source_units)) as server:
        client = line_client(server.port)
        line = client.record()
        assert line == (f"M1,Sec15 (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),Flow FLOAT,Level FLOAT) "
                        f"VALUES ('2026-01-01 00:00:00',{ids[0]},0.0,0.0)\r\n").encode()
        began = time.monotonic()
        assert client.record() == line  # no acknowledgement: sent again after EXPORT_RESEND_SECONDS
        assert time.monotonic() - began >= 0.3
        client.send(records.format_ack(records.parse_rtms(line)))
        assert records.parse_rtms(client.record()).record_number == ids[1]


def test_server_ignores_lines_longer_than_max_ack_bytes_however_they_arrive(settings, source_units, caplog,
                                                                            line_client):
    caplog.set_level(logging.INFO, logger="txm.dataexport")
    ids = sample_ids("M1")
    with Running(ExportServer(server_settings(settings, EXPORT_RESEND_SECONDS=30), source_units)) as server:
        client = line_client(server.port)
        first = client.record()
        # the right acknowledgement, but longer than the limit (leading zeros): ignored, even whole
        client.send(f"M1,Samples,{ids[0]:0{MAX_ACK_BYTES}d}\r\n".encode())
        for _ in range(3):  # a line without an end yet, in pieces
            client.send(b"M1,Samples," + b"0" * MAX_ACK_BYTES)
        client.send(f"{ids[0]}\r\nnonsense\r\n".encode())
        wait_for(lambda: "not an acknowledgement" in caplog.text, what="the line after them")
        assert server.acknowledged == 0 and cursor_value() == 0
        assert caplog.text.count(f"sent a line longer than {MAX_ACK_BYTES} bytes; discarded") == 2
        client.send(f"M1,Samples,{ids[0]:0{MAX_ACK_BYTES - 11}d}\r\n".encode())  # exactly the limit
        assert client.record() != first
        assert server.acknowledged == 1


def test_one_client_at_a_time(settings, source_units, line_client):
    with Running(ExportServer(server_settings(settings), source_units)) as server:
        first = line_client(server.port)
        line = first.record()
        second = line_client(server.port)
        with pytest.raises(EOFError):
            second.record(timeout=5)  # refused: closed at once
        first.send(records.format_ack(records.parse_standard(line)))
        assert first.record() != line  # the first client goes on undisturbed
        first.close()
        # once it has gone, the next client gets in and resumes after the acknowledged record
        third = wait_for(lambda: _attach(line_client, server.port), what="a new client to be served")
        assert records.parse_standard(third.record()).record_number == sample_ids("M1")[1]


def _attach(connect, port: int):
    client = connect(port)
    try:
        client.sock.settimeout(2)
        client.buffer = client.sock.recv(65536)
        if not client.buffer:
            client.close()
            return None
    except OSError:
        client.close()
        return None
    return client


def test_server_restart_resumes_after_the_last_acknowledged_record(settings, source_units, line_client):
    ids = sample_ids("M1") + sample_ids("M2")
    with Running(ExportServer(server_settings(settings), source_units)) as server:
        client = line_client(server.port)
        for expected in ids[:2]:
            line = client.record()
            assert records.parse_standard(line).record_number == expected
            client.send(records.format_ack(records.parse_standard(line)))
        wait_for(lambda: cursor_value() == ids[1], what="the second acknowledgement")
        client.record()  # the third record, never acknowledged
    with Running(ExportServer(server_settings(settings), source_units)) as server:
        client = line_client(server.port)
        assert records.parse_standard(client.record()).record_number == ids[2]


def test_export_start_newest_applies_to_the_first_session_only(settings, source_units, line_client):
    ids = sample_ids("M1") + sample_ids("M2")
    with Running(ExportServer(server_settings(settings, EXPORT_START="newest"), source_units)) as server:
        client = line_client(server.port)
        assert records.parse_standard(client.record()).record_number == ids[-1]
    store_samples(source_units, "M2", [(dt.datetime(2026, 3, 1), [1.0])], received=LONG_AGO)
    with Running(ExportServer(server_settings(settings, EXPORT_START="newest"), source_units)) as server:
        client = line_client(server.port)
        assert records.parse_standard(client.record()).record_number == ids[-1]  # not acknowledged yet


def test_a_bad_table_name_is_a_configuration_error(settings, database):
    with pytest.raises(ConfigError, match="EXPORT_TABLE"):
        ExportServer(server_settings(settings, EXPORT_TABLE="my table"), database)


# --- the one slot: dropped, taken over, restricted ---------------------------------------------


def ack(line: bytes) -> bytes:
    return records.format_ack(records.parse_standard(line))


def record_number(line: bytes) -> int:
    return records.parse_standard(line).record_number


def until_closed(client: LineClient, most: int = 10) -> list[bytes]:
    """The records a client receives until the server closes its connection (at most ``most``)."""
    received = []
    with pytest.raises(EOFError):
        for _ in range(most):
            received.append(client.record())
    return received


def test_a_client_that_never_acknowledges_is_dropped_after_export_max_resends(settings, source_units, caplog,
                                                                              line_client):
    caplog.set_level(logging.INFO, logger="txm.dataexport")
    ids = sample_ids("M1") + sample_ids("M2")
    with Running(ExportServer(server_settings(settings, EXPORT_RESEND_SECONDS=0.3, EXPORT_MAX_RESENDS=2),
                              source_units)) as server:
        silent = line_client(server.port)
        silent.send(ack(silent.record()))
        began = time.monotonic()
        received = until_closed(silent)
        # sent, sent again twice, then dropped after one more resend interval without an answer
        assert [record_number(line) for line in received] == [ids[1]] * 3
        assert time.monotonic() - began >= 3 * 0.3
        port = silent.sock.getsockname()[1]
        dropped = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
        assert len(dropped) == 1 and f"127.0.0.1:{port}" in dropped[0], caplog.text
        wait_for(lambda: server.session is None, what="the slot to be free")
        assert cursor_value() == ids[0]
        # the slot is free: the next client gets every record from the first unacknowledged one
        client = line_client(server.port)
        for expected in ids[1:]:
            line = client.record()
            assert record_number(line) == expected
            client.send(ack(line))
        wait_for(lambda: cursor_value() == ids[-1], what="every record to be acknowledged")


def test_export_max_resends_0_never_drops_a_client(settings, source_units, line_client):
    ids = sample_ids("M1")
    with Running(ExportServer(server_settings(settings, EXPORT_RESEND_SECONDS=0.1, EXPORT_MAX_RESENDS=0),
                              source_units)) as server:
        client = line_client(server.port)
        assert [record_number(client.record()) for _ in range(8)] == [ids[0]] * 8
        assert server.session is not None


def test_a_silent_client_is_taken_over_by_a_new_connection(settings, source_units, caplog, line_client):
    caplog.set_level(logging.INFO, logger="txm.dataexport")
    ids = sample_ids("M1") + sample_ids("M2")
    with Running(ExportServer(server_settings(settings, EXPORT_RESEND_SECONDS=0.3, EXPORT_MAX_RESENDS=0),
                              source_units)) as server:
        silent = line_client(server.port)
        silent.send(ack(silent.record()))
        first = silent.record()
        assert silent.record() == first  # unacknowledged for a resend interval: silent
        newcomer = line_client(server.port)
        line = newcomer.record()
        assert record_number(line) == ids[1]  # resumes with the record the silent one left
        assert set(until_closed(silent)) <= {first}  # (resends already on their way) then closed
        assert "taken over by" in caplog.text
        newcomer.send(ack(line))
        assert record_number(newcomer.record()) == ids[2]
        wait_for(lambda: cursor_value() == ids[1], what="the newcomer's acknowledgement")


def test_an_active_client_keeps_the_slot(settings, source_units, caplog, line_client):
    """Attached for longer than a resend interval, acknowledging everything (so now waiting for a
    record, or owing one just sent): a new connection is refused, and logged once."""
    caplog.set_level(logging.INFO, logger="txm.dataexport")
    ids = sample_ids("M2")
    with Running(ExportServer(server_settings(settings, EXPORT_UNITS=["M2"], EXPORT_RESEND_SECONDS=2.0),
                              source_units)) as server:
        client = line_client(server.port)
        line = client.record()
        assert record_number(line) == ids[0]
        client.send(ack(line))
        wait_for(lambda: server.acknowledged == 1, what="the acknowledgement")
        time.sleep(2.5)  # idle, nothing owed, for longer than a resend interval
        with pytest.raises(EOFError):
            line_client(server.port).record(timeout=5)
        store_samples(source_units, "M2", [(dt.datetime(2026, 3, 1), [1.0])], received=LONG_AGO)
        line = client.record()
        assert record_number(line) == sample_ids("M2")[-1]
        with pytest.raises(EOFError):  # owing an acknowledgement for less than a resend interval
            line_client(server.port).record(timeout=5)
        client.send(ack(line))
        wait_for(lambda: server.acknowledged == 2, what="the acknowledgement")
    assert caplog.text.count("refused Data Export client") == 1  # once per address and minute


@pytest.mark.parametrize("bind, allowed, listed, other", [
    ("127.0.0.1", ["10.0.0.0/8", "127.0.0.1"], "127.0.0.1", "127.0.0.2"),
    ("127.0.0.1", ["127.0.0.2/31"], "127.0.0.2", "127.0.0.1"),
    ("::", ["127.0.0.1"], "127.0.0.1", "127.0.0.2"),  # IPv4 clients of a dual-stack listener
])
def test_only_listed_client_addresses_may_connect(settings, source_units, caplog, line_client, bind, allowed,
                                                  listed, other):
    caplog.set_level(logging.INFO, logger="txm.dataexport")
    ids = sample_ids("M1")
    with Running(ExportServer(server_settings(settings, BIND_ADDRESS=bind, EXPORT_ALLOWED_CLIENTS=allowed),
                              source_units)) as server:
        for _ in range(3):
            with pytest.raises(EOFError):
                line_client(server.port, source=other).record(timeout=5)
        client = line_client(server.port, source=listed)
        line = client.record()
        assert record_number(line) == ids[0]
        client.send(ack(line))
        assert record_number(client.record()) == ids[1]
    refusals = [r for r in caplog.records if "not in EXPORT_ALLOWED_CLIENTS" in r.getMessage()]
    assert len(refusals) == 1 and other in refusals[0].getMessage()  # the first of each address, then counted
    assert refusals[0].levelno == logging.WARNING


@pytest.mark.parametrize("text, fragment", [
    ("EXPORT_ALLOWED_CLIENTS: 10.0.0.300", "line 2: EXPORT_ALLOWED_CLIENTS must be a comma-separated list of IP"),
    ("EXPORT_ALLOWED_CLIENTS: 192.168.1.7/24", "not '192.168.1.7/24'"),  # host bits set: a typo?
    ("EXPORT_ALLOWED_CLIENTS: 10.0.0.1, loggernet.example.com", "EXPORT_ALLOWED_CLIENTS must be"),
    ("EXPORT_MAX_RESENDS: -1", "EXPORT_MAX_RESENDS must be a whole number of at least 0"),
])
def test_bad_slot_settings_stop_txm_at_start(tmp_path, text, fragment):
    path = tmp_path / "txm.conf"
    path.write_text(f"[dataexport]\n{text}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        config.read_settings(path)


def test_slot_settings_in_both_formats(tmp_path):
    conf = tmp_path / "txm.conf"
    conf.write_text("[dataexport]\nEXPORT_ALLOWED_CLIENTS: 10.0.0.0/8, 192.168.1.7, ::1\nEXPORT_MAX_RESENDS: 0\n",
                    encoding="utf-8")
    toml = tmp_path / "txm.toml"
    toml.write_text('[dataexport]\nEXPORT_ALLOWED_CLIENTS = ["10.0.0.0/8", "192.168.1.7", "::1"]\n'
                    'EXPORT_MAX_RESENDS = 0\n', encoding="utf-8")
    for path in (conf, toml):
        values = config.read_settings(path)
        assert values.EXPORT_ALLOWED_CLIENTS == ["10.0.0.0/8", "192.168.1.7", "::1"]
        assert values.EXPORT_MAX_RESENDS == 0
    conf.write_text("EXPORT_ALLOWED_CLIENTS: all\n", encoding="utf-8")
    assert config.read_settings(conf).EXPORT_ALLOWED_CLIENTS == []
    assert config.defaults().EXPORT_ALLOWED_CLIENTS == [] and config.defaults().EXPORT_MAX_RESENDS == 5


# --- the pull client against a hand-driven server -----------------------------------------------


class LineServer:
    """A hand-driven Data Export server: accept, send records, read acknowledgements."""

    def __init__(self, port: int = 0):
        self.listener = listen("127.0.0.1", port, "test Data Export")
        self.listener.setblocking(True)
        self.listener.settimeout(WAIT)
        self.port = self.listener.getsockname()[1]
        self.conn: socket.socket | None = None
        self.accepted: list[socket.socket] = []
        self.buffer = b""

    def accept(self, timeout: float = WAIT) -> None:
        self.listener.settimeout(timeout)
        self.conn, _ = self.listener.accept()
        self.accepted.append(self.conn)
        self.buffer = b""

    def send(self, line: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(line)

    def ack(self, timeout: float = WAIT) -> bytes:
        assert self.conn is not None
        self.conn.settimeout(timeout)
        while b"\r\n" not in self.buffer:
            data = self.conn.recv(4096)
            if not data:
                raise EOFError
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line + b"\r\n"

    def no_ack(self, seconds: float) -> None:
        assert self.conn is not None
        self.conn.settimeout(seconds)
        with pytest.raises(socket.timeout):
            while True:
                data = self.conn.recv(4096)
                assert data, "the client closed the connection"
                self.buffer += data
                assert b"\r\n" not in self.buffer, f"unexpected acknowledgement {self.buffer!r}"

    def close(self) -> None:
        for conn in self.accepted:
            conn.close()
        self.listener.close()


@pytest.fixture
def line_server():
    """``line_server(port=0)``: a :class:`LineServer` listening on 127.0.0.1; every one made is closed
    (with the connections it accepted) at the end of the test."""
    with closed_at_the_end(lambda port=0: LineServer(port)) as listen_on:
        yield listen_on


def std(station, table, stamp, recno, *fields) -> bytes:
    return records.format_standard(records.Record(station, table, stamp, recno,
                                                  tuple(records.Field(*f) for f in fields)))


def test_client_stores_then_acknowledges_and_keeps_the_connection_on_bad_records(settings, database, caplog,
                                                                                 line_server):
    caplog.set_level(logging.INFO, logger="txm.loggernet")
    fake = line_server()
    with Running(PullClient(client_settings(settings, fake.port), database, retry_seconds=0.2)):
        fake.accept()
        fake.send(std("Lgr", "Sec15", "2026-05-01 10:00:00.5", 7, ("Battery_V", "FLOAT", "13.5"),
                      ("Note", "VARCHAR(9)", "ok"), ("Temp(1)", "FLOAT", "NAN"), ("N", "INTEGER", "4")))
        assert fake.ack() == b"Lgr,Sec15,7\r\n"
        unit = schema.Unit.get(schema.Unit.code == "LgrSec15")  # stored before the acknowledgement
        assert (unit.channels, unit.labels, unit.name) == (3, ["Battery_V", "Temp(1)", "N"], "Lgr Sec15")
        assert samples_of("LgrSec15") == [(dt.datetime(2026, 5, 1, 10, 0, 0, 500000), 13.5, None, 4.0)]
        # a line that names no record: logged with the reason, not acknowledged, connection kept
        fake.send(b"garbage line\r\n")
        fake.no_ack(0.5)
        assert "does not start with a double quote" in caplog.text
        fake.send(std("Lgr", "Sec15", "2026-05-01 10:00:01", 8, ("Battery_V", "FLOAT", "13.25")))
        assert fake.ack() == b"Lgr,Sec15,8\r\n"
        assert samples_of("LgrSec15")[-1] == (dt.datetime(2026, 5, 1, 10, 0, 1), 13.25, None, None)
        source = schema.LoggerNetSource.get()
        assert (source.station, source.table_name, source.last_record, source.unit_id) == ("Lgr", "Sec15", 8,
                                                                                           unit.id)


def test_client_acknowledges_a_resent_record_without_storing_it_twice(settings, database, caplog, line_server):
    caplog.set_level(logging.INFO, logger="txm.loggernet")
    fake = line_server()
    record = std("Lgr", "T", "2026-05-01 10:00:00", 41, ("V", "FLOAT", "1.5"))
    with Running(PullClient(client_settings(settings, fake.port), database, retry_seconds=0.2)):
        fake.accept()
        fake.send(record)
        assert fake.ack() == b"Lgr,T,41\r\n"
        fake.send(record)  # as if the acknowledgement had been lost
        assert fake.ack() == b"Lgr,T,41\r\n"
        assert "was stored before" in caplog.text
        # a new record number at a time the unit already has: acknowledged, not stored twice
        fake.send(std("Lgr", "T", "2026-05-01 10:00:00", 42, ("V", "FLOAT", "2.5")))
        assert fake.ack() == b"Lgr,T,42\r\n"
        assert "already has a sample" in caplog.text
    assert samples_of("LgrT") == [(dt.datetime(2026, 5, 1, 10), 1.5)]


def test_client_uses_mapped_units_and_refuses_unknown_ones_without_auto_create(settings, database, caplog,
                                                                               line_server):
    manage.add_unit("Tank", "k", 2)
    fake = line_server()
    values = client_settings(settings, fake.port, LOGGERNET_AUTO_CREATE=False, LOGGERNET_UNITS=["Lgr.Sec15=Tank"])
    with Running(PullClient(values, database, retry_seconds=0.2)):
        fake.accept()
        fake.send(std("Other", "Sec15", "2026-05-01 10:00:00", 1, ("V", "FLOAT", "1")))
        fake.no_ack(0.5)
        assert "no unit for station Other table Sec15" in caplog.text
        fake.send(std("Lgr", "Sec15", "2026-05-01 10:00:00", 2, ("A", "FLOAT", "1"), ("B", "FLOAT", "2"),
                      ("C", "FLOAT", "3")))
        assert fake.ack() == b"Lgr,Sec15,2\r\n"
    assert samples_of("Tank") == [(dt.datetime(2026, 5, 1, 10), 1.0, 2.0)]
    assert "keeps the first 2" in caplog.text
    assert not schema.Unit.select().where(schema.Unit.code.startswith("Other")).exists()


def test_unit_map_entries_are_checked():
    assert parse_unit_map(["Lgr.Sec15=M1", " A_1.T = X2 "]) == {("Lgr", "Sec15"): "M1", ("A_1", "T"): "X2"}
    for bad in ["Lgr=M1", "Lgr.Sec15", "Lgr.Sec15=M-1", ".T=M1"]:
        with pytest.raises(ConfigError, match="STATION.TABLE=CODE"):
            parse_unit_map([bad])


def test_client_retries_a_failed_connection_and_reopens_on_the_watchdog(settings, database, line_server):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there yet
    client = PullClient(client_settings(settings, port, LOGGERNET_WATCHDOG_SECONDS=0.5), database,
                        retry_seconds=0.2)
    with Running(client):
        time.sleep(0.6)
        assert client.sessions == 0
        fake = line_server(port)
        fake.accept()
        first = fake.conn
        fake.accept(timeout=10)  # no record for 0.5 s: the watchdog closes and reopens
        assert first.recv(10) == b""  # the old connection was closed by the client
        fake.send(std("Lgr", "W", "2026-05-01 10:00:00", 1, ("V", "FLOAT", "1")))
        assert fake.ack() == b"Lgr,W,1\r\n"
        assert client.sessions >= 2


def test_client_discards_an_over_long_record_and_goes_on(settings, database, caplog, line_server):
    fake = line_server()
    values = client_settings(settings, fake.port, LOGGERNET_MAX_RECORD_BYTES=2048)
    with Running(PullClient(values, database, retry_seconds=0.2)):
        fake.accept()
        fake.send(std("Lgr", "L", "2026-05-01 10:00:00", 1, *[(f"F{i}", "FLOAT", "1.0") for i in range(200)]))
        fake.no_ack(0.5)
        assert "longer than 2048 bytes" in caplog.text
        fake.send(std("Lgr", "L", "2026-05-01 10:00:01", 2, ("V", "FLOAT", "2")))
        assert fake.ack() == b"Lgr,L,2\r\n"


def quarantined() -> list[tuple]:
    return [(q.station, q.table_name, q.record_number, q.raw, q.acknowledged)
            for q in schema.QuarantinedRecord.select().order_by(schema.QuarantinedRecord.id)]


def test_client_stores_missing_and_infinite_values_as_no_value(settings, database, caplog, line_server):
    caplog.set_level(logging.INFO, logger="txm.loggernet")
    fake = line_server()
    with Running(PullClient(client_settings(settings, fake.port), database, retry_seconds=0.2)):
        fake.accept()
        for recno, values in enumerate([("1.5", "2"), ("INF", "NAN"), ("1e309", "-INF"), ("-1e400", "nan"),
                                        ("3", "4")], start=1):
            fake.send(std("Lgr", "T", f"2026-05-01 10:00:0{recno}", recno, ("V", "FLOAT", values[0]),
                          ("W", "FLOAT", values[1])))
            assert fake.ack() == f"Lgr,T,{recno}\r\n".encode()
    assert samples_of("LgrT") == [(dt.datetime(2026, 5, 1, 10, 0, 1), 1.5, 2.0),
                                  (dt.datetime(2026, 5, 1, 10, 0, 2), None, None),
                                  (dt.datetime(2026, 5, 1, 10, 0, 3), None, None),
                                  (dt.datetime(2026, 5, 1, 10, 0, 4), None, None),
                                  (dt.datetime(2026, 5, 1, 10, 0, 5), 3.0, 4.0)]
    # an over-range value is worth one line per field, not one per record
    assert caplog.text.count("field V of Lgr/T holds INF") == 1
    assert "field W of Lgr/T holds -INF" in caplog.text
    assert not quarantined()


def test_client_quarantines_records_it_cannot_store_acknowledges_them_and_goes_on(settings, database, caplog,
                                                                                  line_server):
    caplog.set_level(logging.INFO, logger="txm.loggernet")
    fake = line_server()
    huge = 10 ** 30
    unstorable = [
        std("Lgr", "T", "2026-05-01 10:00:02", huge, ("V", "FLOAT", "2")),  # beyond a 64-bit record number
        b'"Lgr","T","2026-05-01 10:00:03","3","V","FLOAT","high"\r\n',  # not a number
        b'"Lgr","T","2026-02-30 10:00:04","4","V","FLOAT","4"\r\n',  # no such day
        std("L" * 300, "T", "2026-05-01 10:00:05", 5, ("V", "FLOAT", "5")),  # a station name too long to keep
        b"Lgr,T (TMSTAMP TIMESTAMP,RECNBR DECIMAL(10,0),V FLOAT) VALUES ('2026-05-01 10:00:06',6,'x')\r\n",
    ]
    with Running(PullClient(client_settings(settings, fake.port), database, retry_seconds=0.2)) as client:
        fake.accept()
        fake.send(std("Lgr", "T", "2026-05-01 10:00:01", 1, ("V", "FLOAT", "1")))
        assert fake.ack() == b"Lgr,T,1\r\n"
        for line in unstorable[:4]:
            fake.send(line)
        assert fake.ack() == f"Lgr,T,{huge}\r\n".encode()  # acknowledged: the stream is not stuck on it
        assert fake.ack() == b"Lgr,T,3\r\n"
        assert fake.ack() == b"Lgr,T,4\r\n"
        assert fake.ack() == b"L" * 300 + b",T,5\r\n"
        fake.send(unstorable[0])  # sent again (our acknowledgement was lost): acknowledged, kept once
        assert fake.ack() == f"Lgr,T,{huge}\r\n".encode()
        fake.send(std("Lgr", "T", "2026-05-01 10:00:07", 7, ("V", "FLOAT", "7")))
        assert fake.ack() == b"Lgr,T,7\r\n"
        assert client.quarantined == 4
    assert samples_of("LgrT") == [(dt.datetime(2026, 5, 1, 10, 0, 1), 1.0), (dt.datetime(2026, 5, 1, 10, 0, 7), 7.0)]
    assert schema.LoggerNetSource.get(schema.LoggerNetSource.station == "Lgr").last_record == 7
    rows = list(schema.QuarantinedRecord.select().order_by(schema.QuarantinedRecord.id))
    assert [(q.station, q.table_name, q.record_number, q.raw, q.acknowledged) for q in rows] == [
        ("Lgr", "T", str(huge), unstorable[0][:-2].decode(), True),
        ("Lgr", "T", "3", unstorable[1][:-2].decode(), True),
        ("Lgr", "T", "4", unstorable[2][:-2].decode(), True),
        ("L" * 200, "T", "5", unstorable[3][:-2].decode(), True),
    ]
    assert "record number" in rows[0].reason and "9223372036854775807" in rows[0].reason
    assert "not a number" in rows[1].reason
    assert "not a real time" in rows[2].reason
    assert "station name" in rows[3].reason and "200" in rows[3].reason
    assert all(q.server == f"127.0.0.1:{fake.port}" and q.format == "standard" for q in rows)
    assert caplog.text.count("quarantined record Lgr/T 3") == 1
    assert "OverflowError" not in caplog.text and "Traceback" not in caplog.text


def test_a_flood_of_bad_records_is_quarantined_without_flooding_the_log(settings, database, caplog, line_server):
    from txm.loggernet.client import QUARANTINE_LOG_LINES

    fake = line_server()
    with Running(PullClient(client_settings(settings, fake.port), database, retry_seconds=0.2)) as client:
        fake.accept()
        for recno in range(1, 2 * QUARANTINE_LOG_LINES + 1):
            fake.send(f'"Lgr","T","2026-05-01 10:00:00","{recno}","V","FLOAT","high"\r\n'.encode())
        for recno in range(1, 2 * QUARANTINE_LOG_LINES + 1):
            assert fake.ack() == f"Lgr,T,{recno}\r\n".encode()
        assert client.quarantined == 2 * QUARANTINE_LOG_LINES
    assert schema.QuarantinedRecord.select().count() == 2 * QUARANTINE_LOG_LINES
    assert caplog.text.count("quarantined record Lgr/T ") == QUARANTINE_LOG_LINES
    assert f"{QUARANTINE_LOG_LINES} more quarantined record(s) left out of the log" in caplog.text


def test_a_long_record_is_quarantined_whole(settings, database, line_server):
    """A record of 5,000 fields (over 100 KB, more than a MySQL TEXT holds) is kept entire."""
    fake = line_server()
    line = std("Lgr", "T", "2026-05-01 10:00:00", 1, *[(f"F{i}", "FLOAT", "1.5") for i in range(4999)],
               ("Last", "FLOAT", "over"))
    assert len(line) > 100_000
    with Running(PullClient(client_settings(settings, fake.port), database, retry_seconds=0.2)):
        fake.accept()
        fake.send(line)
        assert fake.ack() == b"Lgr,T,1\r\n"
    assert schema.QuarantinedRecord.get().raw == line[:-2].decode()


def test_a_line_that_names_no_record_is_quarantined_once_and_not_acknowledged(settings, database, caplog,
                                                                             line_server):
    fake = line_server()
    garbage = b'"Lgr","T","2026-05-01 10:00:01,"1\x00","V","FLOAT","1"\r\n'  # a quote lost in the header
    with Running(PullClient(client_settings(settings, fake.port, LOGGERNET_FORMAT="standard"), database,
                            retry_seconds=0.2)):
        fake.accept()
        fake.send(garbage)
        fake.send(garbage)  # the server sends it again after its resend interval
        fake.send(std("Lg\x00r", "T", "2026-05-01 10:00:01", 1, ("V", "FLOAT", "1")))  # a NUL makes no name
        fake.no_ack(0.5)
        fake.send(std("Lgr", "T", "2026-05-01 10:00:02", 2, ("V", "FLOAT", "2")))
        assert fake.ack() == b"Lgr,T,2\r\n"
    row, nul = schema.QuarantinedRecord.select().order_by(schema.QuarantinedRecord.id)
    assert (row.station, row.table_name, row.record_number, row.acknowledged) == ("", "", "", False)
    assert row.raw == garbage[:-2].decode().replace("\x00", "\ufffd")  # PostgreSQL text holds no NUL
    assert "expected a comma after item 3" in row.reason
    assert "control character" in nul.reason and nul.raw.startswith('"Lg\ufffdr","T"') and not nul.acknowledged
    assert "record not acknowledged" in caplog.text


def test_an_existing_database_gets_the_quarantine_table_from_syncdb(settings, database):
    schema.Unit.create(code="M1", key="k")
    database.drop_tables([schema.QuarantinedRecord])  # as a database made before the table existed
    assert not database.table_exists("loggernet_quarantine")
    assert manage.syncdb(settings, database).created_tables == ["loggernet_quarantine"]
    assert database.table_exists("loggernet_quarantine")
    assert schema.Unit.select().count() == 1


def test_pulled_records_with_missing_values_are_shown_graphed_and_exported(settings, database, line_server):
    """NAN and INF from a logger, then every page and API that shows the range answers 200."""
    from tests.webutil import add_user, client, login

    fake = line_server()
    with Running(PullClient(client_settings(settings, fake.port), database, retry_seconds=0.2)):
        fake.accept()
        for recno, values in enumerate([("1.5", "2"), ("2.5", "3"), ("INF", "NAN"), ("NAN", "1e309"), ("3", "4"),
                                        ("3.5", "5")], start=1):
            fake.send(std("Lgr", "T", f"2026-05-01 10:00:0{recno}", recno, ("V", "FLOAT", values[0]),
                          ("W", "FLOAT", values[1])))
            assert fake.ack() == f"Lgr,T,{recno}\r\n".encode()
    view = schema.View.create(name="Plant")
    schema.ViewEntry.create(view=view, unit=schema.Unit.get(schema.Unit.code == "LgrT"), channels=[])
    add_user("boss", is_superuser=True, is_staff=True)
    web = client(settings)
    login(web, "boss")
    page = web.get("/units/LgrT/?range=all")
    assert "6 samples" in page.text
    stats = page.text.split("<h2>Statistics</h2>", 1)[1]
    assert re.search(r"<td>V</td>\s*<td class=\"num\">4</td>\s*<td class=\"num\">1.5</td>\s*"
                     r"<td class=\"num\">3.5</td>\s*<td class=\"num\">2.625</td>", stats), stats[:1000]
    svg = re.search(r"<svg.*?</svg>", page.text, re.DOTALL).group()
    assert len(re.findall(r'class="line reactive nofill"', svg)) == 4  # V and W, each broken by its gap
    api = web.get("/api/units/LgrT/samples?range=all").json
    assert api["samples"][1:5] == [["2026-05-01 10:00:02", 2.5, 3.0], ["2026-05-01 10:00:03", None, None],
                                   ["2026-05-01 10:00:04", None, None], ["2026-05-01 10:00:05", 3.0, 4.0]]
    csv_text = web.get("/units/LgrT/data.csv?range=all").text
    assert csv_text.splitlines()[2:5] == ["2026-05-01 10:00:02,2.5,3.0", "2026-05-01 10:00:03,,",
                                          "2026-05-01 10:00:04,,"]
    assert web.get(f"/api/views/{view.id}").json["units"][0]["channels"][0]["value"] == 3.5


# --- txm to txm -----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["standard", "rtms"])
def test_txm_export_server_to_txm_client(settings, source_units, fmt, monkeypatch):
    monkeypatch.setattr("txm.loggernet.server.RECORDS_PER_QUERY", 2)  # several queries, one of them full
    server = ExportServer(server_settings(settings, EXPORT_FORMAT=fmt), source_units)
    with Running(server):
        client = PullClient(client_settings(settings, server.port, LOGGERNET_FORMAT=fmt), source_units,
                            retry_seconds=0.2)
        with Running(client):
            wait_for(lambda: server.acknowledged == 4, what="every record")
            store_samples(source_units, "M2", [(dt.datetime(2026, 4, 1, 1, 2, 3, 456789), [-7.5])])  # received now
            wait_for(lambda: server.acknowledged == 5, what="the new sample")
    assert samples_of("M1Samples") == samples_of("M1")
    assert samples_of("M2Samples") == samples_of("M2")
    assert schema.Unit.get(schema.Unit.code == "M1Samples").labels == ["Flow", "Level"]
    assert cursor_value() == max(sample_ids("M1") + sample_ids("M2"))
    assert schema.LoggerNetSource.get(schema.LoggerNetSource.station == "M2").last_record == cursor_value()


class DiesBeforeAcknowledging(PullClient):
    """A client that dies after securing its second record and before acknowledging it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.died = threading.Event()

    def send_ack(self, sock, ack):
        if self.acknowledged == 1:
            sock.shutdown(socket.SHUT_RDWR)
            self.died.set()
            raise OSError("killed")
        super().send_ack(sock, ack)


def test_client_killed_between_securing_and_acknowledging_loses_and_repeats_nothing(settings, source_units,
                                                                                    caplog):
    caplog.set_level(logging.INFO, logger="txm.loggernet")
    ids = sample_ids("M1")
    server = ExportServer(server_settings(settings), source_units)
    with Running(server):
        dying = DiesBeforeAcknowledging(client_settings(settings, server.port), source_units, retry_seconds=0.2)
        with Running(dying):
            wait_for(dying.died.is_set, what="the client to die")
        assert server.acknowledged == 1
        assert len(samples_of("M1Samples")) == 2  # the second record was secured
        wait_for(lambda: server.session is None, what="the server to notice")
        assert cursor_value() == ids[0]
        # a fresh client (a restart): the server sends the unacknowledged record again
        with Running(PullClient(client_settings(settings, server.port), source_units, retry_seconds=0.2)):
            wait_for(lambda: server.acknowledged == 4, what="the rest")
    assert "was stored before" in caplog.text
    assert samples_of("M1Samples") == samples_of("M1")
    assert samples_of("M2Samples") == samples_of("M2")


def test_txm_serve_runs_the_export_server_as_a_service(settings, source_units, line_client):
    from txm.client import TTPClient
    from txm.serve import ServerThread

    values = server_settings(settings, EXPORT_ENABLED=True, DS_PORT=0, EXPORT_UNITS=["M2"])
    with ServerThread(values) as running:
        service = next(s for s in running.server.services if s.name == "dataexport")
        assert "LoggerNet Data Export server on 127.0.0.1:" in service.description
        client = line_client(service.worker.port)
        line = client.record()
        client.send(records.format_ack(records.parse_standard(line)))
        with TTPClient("127.0.0.1", running.ttp_port) as meter:
            assert meter.request("TTP /up/M2/<2026-6-1 12:00:00;4.5> k") == "OK"
        assert client.record().startswith(b'"M2","Samples","2026-06-01 12:00:00"')


def test_loggernet_pull_command_stops_cleanly_on_sigint(config_file, database, line_server):
    fake = line_server()
    proc = subprocess.Popen([*TXM, "--config", str(config_file), "loggernet-pull", "--host", "127.0.0.1",
                             "--port", str(fake.port)], stderr=subprocess.PIPE, text=True,
                            env=txm_subprocess_env())
    try:
        fake.accept()
        fake.send(std("Cli", "T", "2026-05-01 10:00:00", 5, ("V", "FLOAT", "1")))
        assert fake.ack() == b"Cli,T,5\r\n"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
        assert "Stopped after acknowledging 1 record(s)" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()


def test_loggernet_pull_needs_a_host(run_cli, database):
    result = run_cli("loggernet-pull", expect=2)
    assert "--host" in result.output


def test_txm_serve_refuses_to_start_with_a_bad_loggernet_setting(settings, database):
    from txm.serve import ServerThread

    values = settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1", LOGGERNET_HOST="127.0.0.1",
                              LOGGERNET_UNITS=["Lgr=M1"])
    with pytest.raises(ConfigError, match="LOGGERNET_UNITS entry 'Lgr=M1'"):
        ServerThread(values).start()
    # the TTP port was released: the same settings without the mistake start
    with ServerThread(values.replace(LOGGERNET_HOST="", EXPORT_ENABLED=True, EXPORT_PORT=0)) as running:
        assert "dataexport" in [s.name for s in running.server.services]


def test_server_survives_a_database_failure_and_loses_no_acknowledgement(settings, source_units, caplog, line_client):
    """The acknowledgement that could not be stored is asked for again: the record is sent
    again, and the cursor advances once the database is back. The client answered every time, so
    it is not dropped however few resends EXPORT_MAX_RESENDS allows."""
    ids = sample_ids("M1")
    database = source_units
    if settings.DATABASE_ENGINE == "sqlite3":  # wait 0.2 s for the lock, not 10 s
        database = pw.SqliteDatabase(str(settings.sqlite_path()), timeout=0.2,
                                     pragmas={"journal_mode": "wal", "busy_timeout": 200})
        schema.database.initialize(database)
    try:
        with caplog.at_level(logging.WARNING, logger="txm"), \
                Running(ExportServer(server_settings(settings, EXPORT_MAX_RESENDS=1), database)) as server:
            client = line_client(server.port)
            first = client.record()
            assert records.parse_standard(first).record_number == ids[0]
            fail_the_database(settings, 1.5)
            client.send(records.format_ack(records.parse_standard(first)))
            again = 0
            while (line := client.record()) == first:  # sent again until an acknowledgement is stored
                again += 1
                client.send(records.format_ack(records.parse_standard(line)))
            assert again >= 1
            assert records.parse_standard(line).record_number == ids[1]
        assert "database error" in caplog.text
    finally:
        if database is not source_units:
            database.close()
            schema.database.initialize(source_units)
    close_quietly(source_units)  # the test's own connection may have been ended too
    assert cursor_value() == ids[0]
