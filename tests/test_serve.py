"""``txm serve`` as a process: start-up messages, failures, clean stop, and durability under SIGKILL."""

from __future__ import annotations

import datetime as dt
import re
import signal
import socket
import subprocess
import threading
import time
from contextlib import closing

import pytest

from tests.conftest import TXM, database_values, txm_subprocess_env, write_toml
from txm import manage
from txm.client import TTPClient, TTPConnectionError
from txm.config import read_settings
from txm.db import schema
from txm.db.database import open_database


def test_fresh_machine_serve_creates_the_database_and_says_where(serve_process, settings, config_file):
    process = serve_process("--port", "0")
    port = process.wait_ready()
    text = "\n".join(process.lines)
    assert f"Configuration: {config_file}" in text
    assert f"Database: {settings.database_label()} (created)" in text
    assert re.search(r"TTP server listening on 0\.0\.0\.0:\d+", text)
    with TTPClient("127.0.0.1", port, timeout=10) as client:
        assert client.request("TTP /dl/M1/last k") == "405 Unit Not Found"
    assert process.stop() == 0
    assert "Stopped." in process.lines[-1]
    manage.syncdb(settings)  # the tables are there (the backend fixture closes the database)


def test_port_in_use_is_one_line_and_nonzero(settings, config_file):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        write_toml(config_file, {**database_values(settings), "DS_PORT": port, "BIND_ADDRESS": "127.0.0.1"})
        result = subprocess.run([*TXM, "--config", str(config_file), "serve"], capture_output=True, text=True,
                                env=txm_subprocess_env(), timeout=60)
    assert result.returncode == 1, result
    assert f"cannot listen for TTP on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_bad_setting_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "txm.toml"
    path.write_text('DATABASE_NAME = "db.sqlite"\nCOMMIT_INTERVAL = 0\n')
    result = subprocess.run([*TXM, "--config", str(path), "serve"], capture_output=True, text=True,
                            env=txm_subprocess_env(), timeout=60)
    assert result.returncode == 2
    assert "COMMIT_INTERVAL" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_unreadable_database_is_one_line_and_nonzero(tmp_path):
    (tmp_path / "notadb").write_bytes(b"this is not an SQLite file" * 100)
    path = tmp_path / "txm.toml"
    path.write_text('DATABASE_NAME = "notadb"\nDS_PORT = 0\n')
    result = subprocess.run([*TXM, "--config", str(path), "serve"], capture_output=True, text=True,
                            env=txm_subprocess_env(), timeout=60)
    assert result.returncode == 1
    assert "database" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sigterm_flushes_pending_commits(serve_process, settings, config_file):
    write_toml(config_file, {**database_values(settings), "COMMIT_INTERVAL": 100000})
    manage.syncdb(settings)
    manage.add_unit("M1", "s3cret", 1)
    schema.database.close()
    process = serve_process("--port", "0")
    port = process.wait_ready()
    with TTPClient("127.0.0.1", port, timeout=10) as client:
        for i in range(30):
            assert client.request(f"TTP /up/M1/<2020-1-1 0:0:{i};{i}> s3cret") == "OK"
    assert process.stop(signal.SIGTERM) == 0
    assert _count("M1", settings) == 30


def test_sigint_stops_cleanly(serve_process):
    process = serve_process("--port", "0")
    process.wait_ready()
    assert process.stop(signal.SIGINT) == 0


def test_sigkill_during_uploads_loses_no_acknowledged_sample(serve_process, settings):
    manage.syncdb(settings)
    for n in range(8):
        manage.add_unit(f"K{n}", "key", 2)
    schema.database.close()
    process = serve_process("--port", "0")
    port = process.wait_ready()
    acknowledged: list[list[tuple[str, dt.datetime]]] = [[] for _ in range(8)]
    stop = threading.Event()

    def meter(n: int) -> None:
        base = dt.datetime(2020, 1, 1)
        client = TTPClient("127.0.0.1", port, timeout=10)
        i = 0
        try:
            while not stop.is_set():
                stamps = [base + dt.timedelta(seconds=i + j) for j in range(3)]
                i += 3
                reply = client.request("TTP /up/K%d/%s key" % (n, "".join(f"<{s};{i};1>" for s in stamps)))
                if reply == "OK":
                    acknowledged[n].extend((f"K{n}", s) for s in stamps)
        except (TTPConnectionError, OSError):
            pass
        finally:
            client.close()

    threads = [threading.Thread(target=meter, args=(n,), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while sum(map(len, acknowledged)) < 600 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(15)
    acked = [item for per in acknowledged for item in per]
    assert len(acked) >= 600, "the load did not get going"
    with closing(open_database(settings)):
        rows = set((code, ts) for code, ts in schema.Sample.select(schema.Unit.code, schema.Sample.timestamp)
                   .join(schema.Unit).tuples())
    missing = [item for item in acked if item not in rows]
    assert missing == [], f"{len(missing)} of {len(acked)} acknowledged samples are missing"


def _count(code: str, settings) -> int:
    with closing(open_database(read_settings(settings.path))):
        unit = schema.Unit.get(schema.Unit.code == code)
        return schema.Sample.select().where(schema.Sample.unit == unit).count()


# --- the lifecycle object in-process ---------------------------------------------------------------


class RecordingService:
    def __init__(self, name, events, fail=False):
        self.name = name
        self.events = events
        self.fail = fail
        self.description = f"{name} is running"

    def start(self):
        if self.fail:
            from txm.errors import TxmError

            raise TxmError(f"{self.name} cannot start")
        self.events.append(("start", self.name))

    def stop(self):
        self.events.append(("stop", self.name))


def test_services_start_after_the_port_is_bound_and_stop_in_reverse(settings):
    from txm.serve import ServerThread

    events: list = []
    services = [RecordingService("one", events), RecordingService("two", events)]
    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"), services, timeout=10, module_services=False) as running:
        assert running.server.ready.is_set() and running.ttp_port > 0
        assert events == [("start", "one"), ("start", "two")]
    assert events[2:] == [("stop", "two"), ("stop", "one")]
    assert running.server.stopped.is_set()


def test_a_service_that_cannot_start_stops_the_others_and_frees_the_port(settings):
    from txm.errors import TxmError
    from txm.serve import Server

    events: list = []
    server = Server(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"),
                    [RecordingService("one", events), RecordingService("bad", events, fail=True)],
                    handle_signals=False, module_services=False)
    with pytest.raises(TxmError, match="bad cannot start"):
        server.start()
    assert events == [("start", "one"), ("stop", "one")]
    assert server.loop is not None and server.loop.listener.fileno() == -1


def test_thread_service_runs_until_stopped():
    from txm.services import ThreadService

    ticks = []

    class Ticker:
        def run(self, stop):
            while not stop.wait(0.01):
                ticks.append(1)

    service = ThreadService("ticker", Ticker)
    service.start()
    time.sleep(0.1)
    service.stop()
    count = len(ticks)
    time.sleep(0.05)
    assert count > 0 and len(ticks) == count


def test_logs_never_hold_unit_keys(settings, caplog):
    import logging

    from txm.serve import ServerThread

    manage.syncdb(settings)
    manage.add_unit("M1", "TopSecretKey", 1)
    schema.database.close()
    caplog.set_level(logging.DEBUG, logger="txm")
    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"), timeout=10, module_services=False) as running:
        with TTPClient("127.0.0.1", running.ttp_port, timeout=10) as client:
            for line in ("TTP /up/M1/<2020-1-1 0:0:0;1> TopSecretKey", "TTP /up/M1/<2020-1-1 0:0:0;1> TopSecretKey",
                         "TTP /up/M1/<2020-1-1 0:0:0;1;2> TopSecretKey", "TTP /dl/M1/last TopSecretKeyX",
                         "TTP /dl/M2/last TopSecretKey", "TTP /zz/M1/x TopSecretKey", "TTP /dl/M1/last"):
                client.request(line)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "402" in text and "405" in text and "501" in text
    assert "TopSecretKey" not in text


def test_raise_file_limit_moves_the_soft_limit_toward_the_hard_one():
    import resource

    from txm.serve import raise_file_limit

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        lowered = max(64, min(soft, hard) // 2)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
        wanted = lowered + 10 if hard == resource.RLIM_INFINITY else min(hard, lowered + 10)
        assert raise_file_limit(wanted) >= wanted
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= wanted
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
