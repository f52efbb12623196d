"""Faults the TTP server survives without losing what it acknowledged or refusing what it
should answer: a database that refuses writes for a while (a full disk), another process
holding SQLite's write lock, a client that sends nothing but refused requests.

The faults are real: for the full disk ``txm serve`` runs as a subprocess and its file-size
limit (``RLIMIT_FSIZE``, set from outside with ``prlimit``) is lowered while meters upload, so
SQLite's writes fail with an I/O error as on a full disk, then raised again.
"""

from __future__ import annotations

import datetime as dt
import resource
import threading
import time

import pytest

from tests.conftest import database_values, write_toml
from txm import manage
from txm.client import TTPClient, TTPConnectionError
from txm.db import schema
from txm.db.database import open_database

METERS = 4


def _fill_the_disk(pid: int, full: bool) -> None:
    """The server process may no longer make a file grow (``full``), or may again."""
    soft = 1 if full else resource.RLIM_INFINITY
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))


@pytest.mark.sqlite_only
@pytest.mark.parametrize("commit_interval", [1, 200])
def test_a_full_disk_loses_no_acknowledged_upload(serve_process, settings, config_file, commit_interval):
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1",
                             "COMMIT_INTERVAL": commit_interval})
    manage.syncdb(settings)
    for n in range(METERS):
        manage.add_unit(f"K{n}", "key", 1)
    schema.database.close()
    process = serve_process()
    port = process.wait_ready()
    acknowledged: list[tuple[str, dt.datetime]] = []
    refused = [0]
    stop = threading.Event()

    def meter(n: int) -> None:
        i = 0
        try:
            with TTPClient("127.0.0.1", port, timeout=10) as client:
                while not stop.is_set():
                    stamp = dt.datetime(2021, 1, 1) + dt.timedelta(seconds=i)
                    reply = client.request(f"TTP /up/K{n}/<{stamp};{i}> key")
                    if reply == "OK":
                        acknowledged.append((f"K{n}", stamp))
                        i += 1
                    elif reply == "500 Internal error":
                        refused[0] += 1
                        time.sleep(0.01)  # as a meter would, then the same sample again
                    else:
                        raise AssertionError(f"unexpected reply {reply!r}")
        except (TTPConnectionError, OSError):
            pass

    meters = [threading.Thread(target=meter, args=(n,), daemon=True) for n in range(METERS)]
    for thread in meters:
        thread.start()
    try:
        assert _wait(lambda: len(acknowledged) >= 2000, 30), "the load did not get going"
        _fill_the_disk(process.proc.pid, True)
        assert _wait(lambda: refused[0] >= 20, 30), "the full disk was never noticed"
        time.sleep(2)  # writes keep failing; nothing more may be acknowledged meanwhile
        during = len(acknowledged)
        time.sleep(1)
        assert len(acknowledged) == during, "uploads were acknowledged while the disk was full"
        _fill_the_disk(process.proc.pid, False)
        assert _wait(lambda: len(acknowledged) >= during + 2000, 30), "txm did not recover by itself"
    finally:
        _fill_the_disk(process.proc.pid, False)
        stop.set()
        for thread in meters:
            thread.join(15)
    assert process.stop() == 0
    database = open_database(settings)
    try:
        stored = set(schema.Sample.select(schema.Unit.code, schema.Sample.timestamp).join(schema.Unit).tuples())
    finally:
        database.close()
    missing = [item for item in acknowledged if item not in stored]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged samples are missing"
    log = process.logged("WARNING")
    assert log.count("the database refuses writes") == 1, log  # loudly once, then summaries
    assert "the database takes writes again" in log, log


def _wait(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- another process holds SQLite's write lock -----------------------------------------------------


@pytest.mark.sqlite_only
def test_readers_and_unknown_verbs_do_not_wait_for_the_write_lock(settings, config_file):
    """While another process writes (here: holds the lock for longer than the busy timeout),
    downloads are answered at once from the last committed state, and an unknown verb is 501,
    not 500 ten seconds later."""
    import sqlite3

    from txm.serve import ServerThread

    manage.syncdb(settings)
    manage.add_unit("M1", "key", 1)
    schema.database.close()
    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"), timeout=30,
                      module_services=False) as server, TTPClient("127.0.0.1", server.ttp_port, timeout=30) as meter:
        assert meter.request("TTP /up/M1/<2026-1-1 0:0:0;1> key") == "OK"
        other = sqlite3.connect(str(settings.sqlite_path()), isolation_level=None, timeout=1)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process writes, for long
            for line, expected in (("TTP /dl/M1/last key", "OK <1 2026-01-01 00:00:00 1>"),
                                   ("TTP /zz/M1/x key", "501 Not implemented"),
                                   ("TTP /dl/M1/last wrong", "402 Unauthorized")):
                started = time.monotonic()
                assert meter.request(line) == expected
                assert time.monotonic() - started < 1.0, f"{line!r} waited for the write lock"
        finally:
            other.rollback()
            other.close()
        assert meter.request("TTP /up/M1/<2026-1-1 0:0:1;2> key") == "OK"  # writes go on after


# --- a client that sends nothing but refused requests ---------------------------------------------


def test_refused_requests_are_summed_up_not_logged_one_by_one(serve_process, settings, config_file):
    """40,000 refused requests from one client: the first of each kind is in the log, the rest
    are counted, and the connection's close says how many there were."""
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    manage.syncdb(settings)
    manage.add_unit("M1", "key", 1)
    schema.database.close()
    process = serve_process()
    port = process.wait_ready()
    lines = (b"GARBAGE\r" * 10_000 + b"TTP /up/M1/<2026-1-1 0:0:0;1> wrong\r" * 10_000
             + b"TTP /zz/M1/x key\r" * 10_000 + b"TTP /up/M9/<2026-1-1 0:0:0;1> key\r" * 10_000)
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(lines)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while received.count(b"\r") < 40_000:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            received += chunk
    assert received.count(b"\r") == 40_000
    assert _wait(lambda: "of its requests were refused" in process.logged(), 10), process.logged()
    assert process.stop() == 0
    log = process.logged("INFO").splitlines()
    text = "\n".join(log)
    for first in ("400 (request does not start with 'TTP /')", "402 wrong key", "501 (no verb 'zz')", "405 no unit"):
        assert first in text, first
    assert "40000 of its requests were refused" in text
    assert "more refused request(s) left out of the log" in text
    assert len(log) < 200, f"{len(log)} log lines for one client's refused requests"
