"""``txm serve`` stops on any signal, however it arrives, and tells systemd how it is doing.

Every test runs a real ``txm serve`` in a session of its own (as systemd runs it) and sends
real signals: to the main process, to the whole process group (``os.killpg``, what systemd's
default ``KillMode=control-group`` and ``timeout`` do), or to the web process first. A stop
must take at most :data:`STOP_SECONDS`, exit 0, print no traceback, free both ports and leave
no process of the group behind; a web process that ends while txm stops is not started again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from contextlib import closing

import pytest

from tests.conftest import REPO, TXM, database_values, txm_subprocess_env, write_toml
from tests.processes import (
    STOP_SECONDS,
    assert_stopped_cleanly,
    catches,
    children,
    group_members,
    refused,
    wait_for,
)
from txm import manage
from txm.client import TTPClient, TTPConnectionError
from txm.db import schema
from txm.db.database import open_database

# --- the server under test ---------------------------------------------------------------------


@pytest.fixture
def site(settings, config_file):
    """A synced database with unit M1 (key s3cret, 2 channels), both ports free and on 127.0.0.1."""
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1",
                             "LOGIN_REQUIRED": False})
    manage.syncdb(settings)
    manage.add_unit("M1", "s3cret", 2)
    schema.database.close()
    return settings


def started(serve_process, **env: str):
    """A serving ``txm serve``, checked to answer a meter and a browser: (process, TTP port, HTTP port)."""
    process = serve_process(env=env or None)
    port = process.wait_ready()
    http = process.web_port()
    with TTPClient("127.0.0.1", port, timeout=10) as meter:
        assert meter.request("TTP /up/M1/<2026-12-1 9:30:00;11;22.5> s3cret") == "OK"
    assert urllib.request.urlopen(f"http://127.0.0.1:{http}/login", timeout=10).status == 200
    return process, port, http


def web_child(process) -> int:
    assert wait_for(lambda: children(process.proc.pid), 30)
    return max(children(process.proc.pid))  # the resource tracker starts first


# --- one signal, two signals, in every order ---------------------------------------------------


def _main(process, sig):
    os.kill(process.proc.pid, sig)


def _group(process, sig):
    os.killpg(process.proc.pid, sig)


def _child_first(process, sig):
    os.kill(web_child(process), sig)
    time.sleep(0.3)  # the web process is gone or going before the server hears of it
    os.kill(process.proc.pid, sig)


def _group_twice(process, sig):
    os.killpg(process.proc.pid, sig)
    time.sleep(0.05)
    os.killpg(process.proc.pid, sig)


def _main_twice(process, sig):
    os.kill(process.proc.pid, sig)
    os.kill(process.proc.pid, sig)


@pytest.mark.parametrize("deliver, sig", [
    (_main, signal.SIGTERM), (_main, signal.SIGINT), (_group, signal.SIGTERM), (_group, signal.SIGINT),
    (_child_first, signal.SIGTERM), (_child_first, signal.SIGINT), (_group_twice, signal.SIGTERM),
    (_group_twice, signal.SIGINT), (_main_twice, signal.SIGINT),
], ids=lambda v: getattr(v, "__name__", None) or signal.Signals(v).name)
def test_a_signal_stops_everything(site, serve_process, deliver, sig):
    process, ttp, http = started(serve_process)
    since = time.monotonic()
    deliver(process, sig)
    assert_stopped_cleanly(process, since, (ttp, http))


def test_the_web_process_alone_stopped_is_started_again(site, serve_process):
    """SIGTERM to the web process alone ends it cleanly; txm, still serving, starts a new one."""
    process, ttp, http = started(serve_process)
    first = web_child(process)
    os.kill(first, signal.SIGTERM)
    assert wait_for(lambda: children(process.proc.pid) and max(children(process.proc.pid)) != first, 30)
    assert wait_for(lambda: "starting it again" in process.logged(), 10)
    assert wait_for(lambda: _status(http) == 200, 30)
    since = time.monotonic()
    os.killpg(process.proc.pid, signal.SIGTERM)
    process.proc.wait(STOP_SECONDS)
    assert process.proc.returncode == 0 and wait_for(lambda: not group_members(process.proc.pid), STOP_SECONDS)
    assert time.monotonic() - since < STOP_SECONDS and refused(http) and refused(ttp)


def _status(port: int) -> int | None:
    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5).status
    except OSError:
        return None


# --- during start-up -------------------------------------------------------------------------------


@pytest.mark.parametrize("moment, deliver, sig", [
    ("loading", _group, signal.SIGINT),   # txm serve handles signals, its modules still loading
    ("loading", _group, signal.SIGTERM),
    ("web starting", _group, signal.SIGTERM),  # the web process exists but is not ready
    ("web starting", _group, signal.SIGINT),
    ("web starting", _main, signal.SIGTERM),
])
def test_a_signal_during_start_up_stops_it_quietly(site, serve_process, moment, deliver, sig):
    process = serve_process()
    pid = process.proc.pid
    if moment == "loading":
        assert wait_for(lambda: catches(pid, signal.SIGTERM), 30, step=0.001)
    else:
        assert wait_for(lambda: len(children(pid)) >= 2, 30, step=0.001), "no web process started"
    since = time.monotonic()
    deliver(process, sig)
    assert_stopped_cleanly(process, since)


# --- while meters upload and a download streams ------------------------------------------------------


def test_group_sigterm_while_meters_upload_and_a_csv_streams_keeps_every_ok(site, serve_process):
    with closing(open_database(site)) as database:
        unit = schema.Unit.get(schema.Unit.code == "M1")
        start = dt.datetime(2020, 1, 1)
        rows = [{"unit": unit.id, "timestamp": start + dt.timedelta(seconds=i), "received": start,
                 "ch1": float(i), "ch2": 1.0} for i in range(100_000)]
        with database.atomic():
            for i in range(0, len(rows), 5000):
                schema.Sample.insert_many(rows[i:i + 5000]).execute()
        for n in range(4):
            manage.add_unit(f"K{n}", "key", 1)
    process, ttp, http = started(serve_process)

    with socket.create_connection(("127.0.0.1", http), timeout=10) as download:
        download.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        download.sendall(b"GET /units/M1/data.csv?range=all HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert download.recv(4096).startswith(b"HTTP/1.1 200")  # streaming, and no longer read

        acknowledged: list[tuple[str, dt.datetime]] = []
        stop = threading.Event()

        def meter(n: int) -> None:
            i = 0
            try:
                with TTPClient("127.0.0.1", ttp, timeout=10) as client:
                    while not stop.is_set():
                        stamp = dt.datetime(2021, 1, 1) + dt.timedelta(seconds=i)
                        i += 1
                        if client.request(f"TTP /up/K{n}/<{stamp};{i}> key") == "OK":
                            acknowledged.append((f"K{n}", stamp))
            except (TTPConnectionError, OSError):
                pass

        meters = [threading.Thread(target=meter, args=(n,), daemon=True) for n in range(4)]
        for thread in meters:
            thread.start()
        assert wait_for(lambda: len(acknowledged) >= 200, 30)
        since = time.monotonic()
        os.killpg(process.proc.pid, signal.SIGTERM)
        try:
            assert_stopped_cleanly(process, since, (ttp, http))
        finally:
            stop.set()
            for thread in meters:
                thread.join(15)
    with closing(open_database(site)):
        stored = set(schema.Sample.select(schema.Unit.code, schema.Sample.timestamp).join(schema.Unit)
                     .where(schema.Unit.code != "M1").tuples())
    missing = [item for item in acknowledged if item not in stored]
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged samples are missing"


# --- the main process killed ---------------------------------------------------------------------------


def test_the_web_process_ends_when_the_main_process_is_killed(site, serve_process):
    process, ttp, http = started(serve_process)
    web_child(process)
    os.kill(process.proc.pid, signal.SIGKILL)
    process.proc.wait(10)
    since = time.monotonic()
    assert wait_for(lambda: not group_members(process.proc.pid), 5), (
        f"left running after SIGKILL: {group_members(process.proc.pid)}")
    assert refused(http) and refused(ttp)
    assert time.monotonic() - since < 5


# --- a start that fails changes no database ----------------------------------------------------------


def _serve_once(config_file, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*TXM, "--config", str(config_file), "serve"], capture_output=True, text=True,
                          env=txm_subprocess_env(**(env or {})), timeout=60)


def _one_line_failure(result: subprocess.CompletedProcess, code: int, words: str) -> None:
    assert result.returncode == code, result
    assert words in result.stderr, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def _held_port() -> socket.socket:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


@pytest.fixture
def sqlite_site(tmp_path):
    """A configuration naming an SQLite file that does not exist yet."""
    path = write_toml(tmp_path / "txm.toml", {"DATABASE_NAME": str(tmp_path / "txm.db"), "DS_PORT": 0,
                                              "HTTP_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    return path, tmp_path / "txm.db"


def test_ports_in_use_fail_before_the_database_is_created(sqlite_site):
    path, db_file = sqlite_site
    with _held_port() as holder:
        port = holder.getsockname()[1]
        for key, what in (("DS_PORT", "TTP"), ("HTTP_PORT", "HTTP")):
            write_toml(path, {"DATABASE_NAME": str(db_file), "DS_PORT": 0, "HTTP_PORT": 0,
                              "BIND_ADDRESS": "127.0.0.1", key: port})
            _one_line_failure(_serve_once(path), 1, f"cannot listen for {what} on 127.0.0.1:{port}")
            assert not db_file.exists() and not list(db_file.parent.glob("txm.db*"))


def test_a_failed_start_leaves_an_existing_database_as_it_was(sqlite_site):
    from txm.config import read_settings

    path, db_file = sqlite_site
    manage.syncdb(read_settings(path)).database.close()
    before = hashlib.sha256(db_file.read_bytes()).hexdigest(), db_file.stat().st_mtime_ns
    with _held_port() as holder:
        write_toml(path, {"DATABASE_NAME": str(db_file), "DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1",
                          "HTTP_PORT": holder.getsockname()[1]})
        _one_line_failure(_serve_once(path), 1, "cannot listen for HTTP")
    assert (hashlib.sha256(db_file.read_bytes()).hexdigest(), db_file.stat().st_mtime_ns) == before


def test_missing_apps_fail_before_the_database_is_created(sqlite_site):
    path, db_file = sqlite_site
    for section in ("ttpapps", "httpapps"):
        path.write_text(path.read_text().split("\n[")[0] + f"\n[{section}]\nghost = true\n")
        _one_line_failure(_serve_once(path), 2, "'ghost' is switched on but there is no")
        assert not db_file.exists()


def test_a_missing_module_is_one_line_and_creates_no_database(sqlite_site, tmp_path):
    """An installation without jinja2 (made so by a jinja2 that cannot be imported) says so."""
    path, db_file = sqlite_site
    fake = tmp_path / "without"
    (fake / "jinja2").mkdir(parents=True)
    (fake / "jinja2" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'jinja2'\", name='jinja2')\n")
    env = {"PYTHONPATH": str(fake) + os.pathsep + str(REPO)}
    _one_line_failure(_serve_once(path, env), 1, "the module 'jinja2' it needs is not installed")
    assert not db_file.exists()


# --- what txm serve says at start -----------------------------------------------------------------------


def test_start_up_lines_list_the_apps(site, serve_process, config_file):
    import shutil

    for kind, name in (("TTPApps", "ok"), ("HTTPApps", "mobile")):
        (config_file.parent / kind).mkdir()
        shutil.copy(REPO / "examples" / kind.lower() / f"{name}.py", config_file.parent / kind / f"{name}.py")
    config_file.write_text(config_file.read_text() + '\n[ttpapps]\nok = true\n'
                           '\n[httpapps]\nmobile = {enabled = true, url = "mobile/"}\n')
    process, ttp, http = started(serve_process)
    text = "\n".join(process.lines)
    assert "TTP Apps: ok" in text and "HTTP Apps: mobile at /mobile/" in text, text
    since = time.monotonic()
    os.killpg(process.proc.pid, signal.SIGTERM)
    assert_stopped_cleanly(process, since, (ttp, http))
