"""The TTP server over real sockets on port 0: every reply code, framing, limits, apps."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import time
from contextlib import closing
from pathlib import Path

import pytest

from tests.conftest import REPO
from txm import manage
from txm.db import schema
from txm.serve import ServerThread

TIMEOUT = 10


def make_settings(settings, **values):
    base = {"DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1"}
    base.update(values)
    return settings.replace(**base)


@pytest.fixture
def units(database):
    manage.add_unit("M1", "s3cret", 4)
    manage.add_unit("L2", "k2", 2, labels="Flow,Level", show_labels=True)
    database.close()


@pytest.fixture
def serve(settings, units):
    """Start a server with extra settings; stopped at the end of the test."""
    running = []

    def start(**values):
        server = ServerThread(make_settings(settings, **values), timeout=TIMEOUT, module_services=False).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


@pytest.fixture
def meter(serve, open_meter):
    return open_meter(serve().ttp_port)


def stored(code: str) -> list[tuple]:
    """The unit's samples (timestamp, ch1, ch2) straight from the database."""
    with schema.database.connection_context():
        unit = schema.Unit.get(schema.Unit.code == code)
        return [(s.timestamp, s.ch1, s.ch2) for s in schema.Sample.select().where(schema.Sample.unit == unit)
                .order_by(schema.Sample.timestamp)]


# --- reply codes -----------------------------------------------------------------------------------


def test_upload_then_download_last(meter):
    assert meter.ask("TTP /up/M1/<2009-1-16 15:30:45;11;22;33;44> s3cret") == "OK"
    reply = meter.ask("TTP /dl/M1/last s3cret")
    assert reply.startswith("OK <") and reply.endswith(" 2009-01-16 15:30:45 11 22 33 44>")


def test_values_and_microseconds_print_as_the_meter_expects(meter):
    assert meter.ask("TTP /up/M1/<9-1-6 5:3:4.1;11.50;-2;1e3;0.25> s3cret") == "OK"
    reply = meter.ask("TTP /dl/M1/last s3cret")
    assert reply.split(" ", 2)[2] == "2009-01-06 05:03:04.100000 11.5 -2 1000 0.25>"


def test_download_with_labels(meter):
    assert meter.ask("TTP /up/L2/<2009-1-16 15:30:45;1;2.5> k2") == "OK"
    assert meter.ask("TTP /dl/L2/last k2").endswith(" 2009-01-16 15:30:45 Flow=1 Level=2.5>")


def test_last_is_the_newest_timestamp_not_the_latest_upload(meter):
    assert meter.ask("TTP /up/M1/<2020-1-1 0:0:0;2;2;2;2> s3cret") == "OK"
    assert meter.ask("TTP /up/M1/<2019-1-1 0:0:0;1;1;1;1> s3cret") == "OK"  # back-filled
    assert "2020-01-01 00:00:00 2 2 2 2>" in meter.ask("TTP /dl/M1/last s3cret")


def test_wrong_key_is_402_and_stores_nothing(meter):
    assert meter.ask("TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4> S3CRET") == "402 Unauthorized"
    assert meter.ask("TTP /dl/M1/last wrong") == "402 Unauthorized"
    assert stored("M1") == []


def test_unknown_unit_is_405(meter):
    assert meter.ask("TTP /up/NOPE/<2009-1-16 15:30:45;1;2;3;4> s3cret") == "405 Unit Not Found"
    assert meter.ask("TTP /dl/m1/last s3cret") == "405 Unit Not Found"  # codes are case-sensitive


def test_no_sample_is_404(meter):
    assert meter.ask("TTP /dl/M1/last s3cret") == "404 Data Not found"


@pytest.mark.parametrize("line", [
    "TTP /up/M1/<2009-1-16 15:30:45;1;2;3> s3cret",  # too few values
    "TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4;5> s3cret",  # too many
    "TTP /up/M1/<2009-13-16 15:30:45;1;2;3;4> s3cret",  # month 13
    "TTP /up/M1/<2009-2-30 15:30:45;1;2;3;4> s3cret",  # Feb 30
    "TTP /up/M1/<2009-1-16 15:30:45;1;2;x;4> s3cret",
    "TTP /up/M1/ s3cret",
    "TTP /dl/M1/first s3cret",
    "hello",
    "TTP /dl/M1/last",  # no key
])
def test_bad_requests_are_400_and_keep_the_connection(meter, line):
    assert meter.ask(line) == "400 Bad request"
    assert meter.ask("TTP /dl/M1/last s3cret") == "404 Data Not found"


def test_bad_sample_in_a_request_stores_none_of_it(meter):
    line = "TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4><2009-2-30 15:30:45;1;2;3;4> s3cret"
    assert meter.ask(line) == "400 Bad request"
    assert stored("M1") == []


def test_unknown_verb_is_501(meter):
    assert meter.ask("TTP /zz/M1/x s3cret") == "501 Not implemented"
    assert meter.ask("TTP /ok/M1/x s3cret") == "501 Not implemented"  # app not switched on


def test_duplicates_are_406_as_the_manual_shows(meter):
    assert meter.ask("TTP /up/M1/<2009-1-16 15:30:45;11;22;33;44> s3cret") == "OK"
    line = ("TTP /up/M1/<2009-1-16 15:30:45;11;22;33;44><2009-1-16 15:30:45;11.50;23;34.5;46>"
            "<2009-1-16 15:30:46;12;23;34;45> s3cret")
    # Sample 1 exists already, sample 2 repeats it inside the request; sample 3 is stored.
    assert meter.ask(line) == "406 Duplicate sample 1<2009-1-16 15:30:45>2<2009-1-16 15:30:45>"
    assert stored("M1") == [(dt.datetime(2009, 1, 16, 15, 30, 45), 11, 22),
                            (dt.datetime(2009, 1, 16, 15, 30, 46), 12, 23)]


def test_duplicate_timestamps_are_returned_as_sent(meter):
    assert meter.ask("TTP /up/M1/<2007-01-16 15:30:45.1;1;2;3;4> s3cret") == "OK"
    line = "TTP /up/M1/<7-1-17 0:0:0;1;2;3;4><7-1-16 15:30:45.100;1;2;3;4> s3cret"
    assert meter.ask(line) == "406 Duplicate sample 2<7-1-16 15:30:45.100>"
    assert len(stored("M1")) == 2


def test_a_failing_verb_is_500_and_the_server_keeps_serving(settings, units, tmp_path, open_meter):
    apps = settings.base_dir / "TTPApps"
    apps.mkdir(exist_ok=True)
    (apps / "boom.py").write_text("def handle(call):\n    call.unit()\n    raise RuntimeError('bug')\n")
    conf = settings.path.read_text() + "\n[ttpapps]\nboom = true\n"
    settings.path.write_text(conf)
    from txm.config import read_settings

    with ServerThread(make_settings(read_settings(settings.path)), timeout=TIMEOUT, module_services=False) as server:
        m = open_meter(server.ttp_port)
        m.send(b"TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4> s3cret\rTTP /boom/M1/x s3cret\r"
               b"TTP /up/M1/<2009-1-16 15:30:46;1;2;3;4> s3cret\r")
        assert [m.reply(), m.reply(), m.reply()] == ["OK", "500 Internal error", "OK"]
        assert m.ask("TTP /dl/M1/last s3cret").endswith("2009-01-16 15:30:46 1 2 3 4>")
    assert len(stored("M1")) == 2


def test_unit_key_change_takes_effect_at_the_next_request(meter):
    assert meter.ask("TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4> s3cret") == "OK"
    with schema.database.connection_context():
        schema.Unit.update(key="newkey").where(schema.Unit.code == "M1").execute()
    assert meter.ask("TTP /dl/M1/last s3cret") == "402 Unauthorized"
    assert meter.ask("TTP /dl/M1/last newkey").startswith("OK <")


# --- framing ---------------------------------------------------------------------------------------


def test_several_requests_in_one_packet(meter):
    meter.send(b"TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4> s3cret\r\n"
               b"TTP /up/M1/<2009-1-16 15:30:46;1;2;3;4> s3cret\n"
               b"TTP /dl/M1/last wrong\r"
               b"TTP /dl/M1/last s3cret\r")
    replies = [meter.reply() for _ in range(4)]
    assert replies[:3] == ["OK", "OK", "402 Unauthorized"]
    assert replies[3].endswith("2009-01-16 15:30:46 1 2 3 4>")


def test_one_request_in_many_packets(meter):
    line = b"TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4> s3cret\r\n"
    for i in range(0, len(line), 3):
        meter.send(line[i:i + 3])
        time.sleep(0.002)
    assert meter.reply() == "OK"
    assert meter.ask("TTP /dl/M1/last s3cret").startswith("OK <")
    assert meter.buf == b""  # the LF after the CR was not taken for another request


def test_request_then_half_close_still_gets_its_reply(serve):
    server = serve()
    with socket.create_connection(("127.0.0.1", server.ttp_port), timeout=TIMEOUT) as sock:
        sock.sendall(b"TTP /dl/M1/last s3cret\r")
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(100):
            data += chunk
    assert data == b"404 Data Not found\r"


# --- keep-alive, timeout, limits ------------------------------------------------------------------


def test_socket_open_keeps_the_connection(meter):
    for second in range(5):
        assert meter.ask(f"TTP /up/M1/<2009-1-16 15:30:{second};1;2;3;4> s3cret") == "OK"


def test_socket_open_no_closes_after_each_reply(serve, open_meter):
    server = serve(SOCKET_OPEN=False)
    m = open_meter(server.ttp_port)
    m.send(b"TTP /dl/M1/last s3cret\rTTP /dl/M1/last s3cret\r")
    assert m.reply() == "404 Data Not found"
    assert m.closed() and m.buf == b""


def test_idle_connection_is_closed_after_channel_timeout(serve, open_meter):
    server = serve(CHANNEL_TIMEOUT=0.3)
    idle, stalled, busy = open_meter(server.ttp_port), open_meter(server.ttp_port), open_meter(server.ttp_port)
    stalled.send(b"TTP /dl/M1/la")  # stalls mid-request
    start = time.monotonic()
    for _ in range(4):  # an active meter stays connected
        time.sleep(0.15)
        assert busy.ask("TTP /dl/M1/last s3cret") == "404 Data Not found"
    assert idle.closed() and stalled.closed()
    assert 0.3 <= time.monotonic() - start < 5
    assert busy.ask("TTP /dl/M1/last s3cret") == "404 Data Not found"


def test_request_over_the_size_limit_is_400_and_closed(serve, open_meter):
    server = serve(MAX_REQUEST_BYTES=200)
    m = open_meter(server.ttp_port)
    m.send(b"TTP /up/M1/" + b"<2009-1-16 15:30:45;1;2;3;4>" * 10 + b" s3cret\r")
    assert m.reply() == "400 Bad request"
    assert m.closed()
    m = open_meter(server.ttp_port)  # an unterminated flood is cut off as well
    m.send(b"x" * 5000)
    assert m.reply() == "400 Bad request"
    assert m.closed()
    m = open_meter(server.ttp_port)
    assert m.ask("TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4> s3cret") == "OK"


def test_large_multi_sample_upload_within_the_default_limit(meter):
    start = dt.datetime(2020, 1, 1)
    samples = "".join(f"<{start + dt.timedelta(seconds=i)};{i};2;3;4>" for i in range(5000))
    assert meter.ask(f"TTP /up/M1/{samples} s3cret") == "OK"
    assert len(stored("M1")) == 5000
    assert meter.ask("TTP /dl/M1/last s3cret").endswith(" 2020-01-01 01:23:19 4999 2 3 4>")


def test_connection_cap_refuses_extra_connections_only(serve, open_meter):
    server = serve(MAX_CONNECTIONS=3)
    held = [open_meter(server.ttp_port) for _ in range(3)]
    for m in held:
        assert m.ask("TTP /dl/M1/last s3cret") == "404 Data Not found"
    extra = open_meter(server.ttp_port)
    assert extra.reply() == "500 Internal error"
    assert extra.closed()
    for m in held:
        assert m.ask("TTP /dl/M1/last s3cret") == "404 Data Not found"
    held.pop().close()  # a meter leaves: its place is free
    time.sleep(0.2)
    again = open_meter(server.ttp_port)
    assert again.ask("TTP /dl/M1/last s3cret") == "404 Data Not found"


def test_many_connections_in_one_pass_are_all_answered(serve, open_meter):
    server = serve()
    meters = [open_meter(server.ttp_port) for _ in range(50)]
    for i, m in enumerate(meters):
        m.send(f"TTP /up/M1/<2009-1-16 15:{i // 60}:{i % 60};{i};2;3;4> s3cret\r".encode())
    assert [m.reply() for m in meters] == ["OK"] * 50
    assert len(stored("M1")) == 50


# --- COMMIT_INTERVAL > 1 ---------------------------------------------------------------------------


def test_commit_interval_answers_at_once_and_commits_within_a_second(serve, open_meter):
    server = serve(COMMIT_INTERVAL=100)
    m = open_meter(server.ttp_port)
    assert m.ask("TTP /up/M1/<2009-1-16 15:30:45;1;2;3;4> s3cret") == "OK"
    deadline = time.monotonic() + 5
    while not stored("M1"):
        assert time.monotonic() < deadline, "not committed within MAX_COMMIT_DELAY"
        time.sleep(0.1)


def test_commit_interval_flushes_on_stop(settings, units, open_meter):
    with ServerThread(make_settings(settings, COMMIT_INTERVAL=1000), timeout=TIMEOUT, module_services=False) as server:
        m = open_meter(server.ttp_port)
        for second in range(20):
            assert m.ask(f"TTP /up/M1/<2009-1-16 15:30:{second};1;2;3;4> s3cret") == "OK"
    # the server has stopped: what it had not committed yet, it committed then
    assert len(stored("M1")) == 20


# --- apps ------------------------------------------------------------------------------------------


def _with_apps(settings, apps: str):
    from txm.config import read_settings

    folder = settings.base_dir / "TTPApps"
    folder.mkdir(exist_ok=True)
    shutil.copy(REPO / "examples" / "ttpapps" / "ok.py", folder / "ok.py")
    settings.path.write_text(settings.path.read_text() + "\n[ttpapps]\n" + apps + "\n")
    return make_settings(read_settings(settings.path))


def test_ok_app(settings, units, open_meter):
    with ServerThread(_with_apps(settings, "ok = true"), timeout=TIMEOUT, module_services=False) as server:
        m = open_meter(server.ttp_port)
        assert m.ask("TTP /ok/M1/ping s3cret") == "OK"
        assert m.ask("TTP /ok/M1/ping wrong") == "402 Unauthorized"
        assert m.ask("TTP /ok/M9/ping s3cret") == "405 Unit Not Found"
    assert stored("M1") == []


def test_switched_off_app_is_501(settings, units, open_meter):
    with ServerThread(_with_apps(settings, "ok = false"), timeout=TIMEOUT, module_services=False) as server:
        m = open_meter(server.ttp_port)
        assert m.ask("TTP /ok/M1/ping s3cret") == "501 Not implemented"


def test_missing_app_stops_the_start(settings, units):
    from txm.errors import ConfigError

    with pytest.raises(ConfigError, match="nothere"):
        ServerThread(_with_apps(settings, "nothere = true"), module_services=False).start()


def test_app_from_an_entry_point(settings, units, tmp_path, monkeypatch, open_meter):
    dist = tmp_path / "site"
    (dist / "pingapp").mkdir(parents=True)
    (dist / "pingapp" / "__init__.py").write_text("def handle(call):\n    return 'OK pong ' + call.unit().code\n")
    info = dist / "pingapp-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pingapp\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[txm.ttpapps]\nping = pingapp\n")
    monkeypatch.syspath_prepend(str(dist))
    from txm.config import read_settings

    settings.path.write_text(settings.path.read_text() + "\n[ttpapps]\nping = true\n")
    with ServerThread(make_settings(read_settings(settings.path)), timeout=TIMEOUT, module_services=False) as server:
        m = open_meter(server.ttp_port)
        assert m.ask("TTP /ping/M1/x s3cret") == "OK pong M1"


def test_port_zero_reports_the_bound_port(serve, open_meter):
    server = serve()
    assert server.ttp_port > 0
    assert Path  # the listening socket answers on exactly that port
    open_meter(server.ttp_port)


def test_app_as_a_package_folder(settings, units, open_meter):
    from txm.config import read_settings

    package = settings.base_dir / "TTPApps" / "echo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("from .reply import handle\n")
    (package / "reply.py").write_text("def handle(call):\n    return 'OK ' + call.request.argument\n")
    settings.path.write_text(settings.path.read_text() + "\n[ttpapps]\necho = true\n")
    with ServerThread(make_settings(read_settings(settings.path)), timeout=TIMEOUT, module_services=False) as server:
        m = open_meter(server.ttp_port)
        assert m.ask("TTP /echo/M1/hello there k") == "OK hello there"


@pytest.mark.server_databases
def test_server_recovers_when_its_database_connection_is_cut(serve, settings, backend, open_meter):
    """PostgreSQL/MariaDB: a dropped connection costs the requests of one pass a 500, no more."""
    server = serve()
    m = open_meter(server.ttp_port)
    assert m.ask("TTP /up/M1/<2009-1-16 15:30:00;1;2;3;4> s3cret") == "OK"
    with closing(backend._admin()) as admin, admin.cursor() as cur:
        if backend.name == "postgresql":
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (settings.DATABASE_NAME,))
        else:
            cur.execute("SELECT id FROM information_schema.processlist WHERE db = %s AND id <> CONNECTION_ID()",
                        (settings.DATABASE_NAME,))
            for (pid,) in cur.fetchall():
                cur.execute(f"KILL {int(pid)}")
    first = m.ask("TTP /up/M1/<2009-1-16 15:30:01;1;2;3;4> s3cret")
    assert first in ("OK", "500 Internal error")
    replies = [m.ask(f"TTP /up/M1/<2009-1-16 15:30:{s};1;2;3;4> s3cret") for s in range(2, 6)]
    assert replies == ["OK"] * 4
    stamps = {row[0].second for row in stored("M1")}
    assert stamps >= {0, 2, 3, 4, 5} and (first != "OK" or 1 in stamps)


def test_junk_floods_and_slow_senders_do_not_block_other_meters(serve, open_meter):
    import random
    import threading

    server = serve(MAX_REQUEST_BYTES=4096)
    rng = random.Random(7)
    junk = bytes(rng.randrange(256) for _ in range(200_000))
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            try:
                with socket.create_connection(("127.0.0.1", server.ttp_port), timeout=TIMEOUT) as sock:
                    sock.settimeout(0.5)
                    for i in range(0, len(junk), 8192):
                        sock.sendall(junk[i:i + 8192])
                        try:
                            sock.recv(65536)
                        except socket.timeout:
                            pass
            except OSError:
                pass  # the server closed it (an over-long line): open another

    slow = open_meter(server.ttp_port)
    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    good = open_meter(server.ttp_port)
    try:
        for second in range(20):
            slow.send(b"T")  # a byte at a time, never finishing
            assert good.ask(f"TTP /up/M1/<2009-1-16 15:30:{second};1;2;3;4> s3cret") == "OK"
    finally:
        stop.set()
        flooder.join(TIMEOUT)
    assert len(stored("M1")) == 20
