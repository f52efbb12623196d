"""systemd's ``Type=notify``: READY, STOPPING and the watchdog, received on a real AF_UNIX
datagram socket standing in for systemd, from the library and from a real ``txm serve``."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
import urllib.request

import pytest

from tests.conftest import database_values, write_toml
from tests.processes import STOP_SECONDS, assert_stopped_cleanly
from txm import manage
from txm.client import TTPClient
from txm.db import schema
from txm.systemd import Notifier


class FakeSystemd:
    """The receiving end of ``$NOTIFY_SOCKET``: a thread keeps every datagram with the time it came."""

    def __init__(self, path: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(5)

    def __enter__(self) -> "FakeSystemd":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def texts(self, after: int = 0) -> list[str]:
        return [text for _, text in self.messages[after:]]

    def wait_for(self, state: str, timeout: float) -> float:
        """The time the first message holding ``state`` came (waiting for it)."""
        deadline = time.monotonic() + timeout
        while True:
            for when, text in list(self.messages):
                if state in text.splitlines():
                    return when
            if time.monotonic() > deadline:
                raise AssertionError(f"no {state} within {timeout} s; received {self.texts()}")
            time.sleep(0.01)

    def pings(self) -> list[float]:
        return [when for when, text in self.messages if text == "WATCHDOG=1"]


@pytest.fixture
def systemd(tmp_path):
    with FakeSystemd(str(tmp_path / "notify")) as fake:
        yield fake, str(tmp_path / "notify")


# --- the library -------------------------------------------------------------------------------------


def test_notifier_sends_each_message_as_one_datagram(systemd):
    fake, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path})
    notifier.ready("TTP on 0.0.0.0:9995")
    notifier.stopping()
    fake.wait_for("STOPPING=1", 2)
    assert fake.texts() == ["READY=1\nSTATUS=TTP on 0.0.0.0:9995", "STOPPING=1"]


def test_notifier_reaches_an_abstract_socket():
    name = f"txm-test-{secrets.token_hex(6)}"
    with FakeSystemd(b"\0" + name.encode()) as fake:
        Notifier({"NOTIFY_SOCKET": "@" + name}).stopping()
        fake.wait_for("STOPPING=1", 2)


def test_without_notify_socket_nothing_is_sent():
    notifier = Notifier({})
    assert not notifier.enabled and notifier.notify("READY=1") is False
    notifier.heartbeat()  # no watchdog: nothing happens
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).enabled is False  # not a socket address


def test_watchdog_pings_at_half_the_interval_for_this_process_only(systemd):
    fake, path = systemd
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())})
    assert notifier.watchdog_interval == 1.0
    notifier.heartbeat(100.0)
    notifier.heartbeat(100.5)  # too soon: not sent
    notifier.heartbeat(101.0)
    notifier.stopping()  # a marker: every earlier datagram has come once it has
    fake.wait_for("STOPPING=1", 2)
    assert fake.texts() == ["WATCHDOG=1", "WATCHDOG=1", "STOPPING=1"]
    other = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"})
    assert other.watchdog_interval is None  # systemd means another process


def test_a_vanished_socket_is_logged_once_and_never_raises(tmp_path, caplog):
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone"), "WATCHDOG_USEC": "1000"})
    for now in range(5):
        notifier.heartbeat(float(now))
    assert sum("cannot notify systemd" in r.getMessage() for r in caplog.records) == 1


# --- a real txm serve ---------------------------------------------------------------------------------


@pytest.fixture
def site(settings, config_file):
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    manage.syncdb(settings)
    manage.add_unit("M1", "s3cret", 1)
    schema.database.close()
    return config_file


def test_ready_means_serving_then_watchdog_then_stopping(site, systemd, serve_process):
    fake, path = systemd
    process = serve_process(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    fake.wait_for("READY=1", 30)
    # Ready means ready: the meter and the browser are answered at once.
    port = process.wait_ready()
    with TTPClient("127.0.0.1", port, timeout=5) as meter:
        assert meter.request("TTP /up/M1/<2026-12-1 9:30:00;1> s3cret") == "OK"
    http = process.web_port()
    assert urllib.request.urlopen(f"http://127.0.0.1:{http}/login", timeout=5).status == 200
    first = fake.wait_for("WATCHDOG=1", 5)
    time.sleep(2.2)
    pings = [when for when in fake.pings() if when >= first]
    assert len(pings) >= 4, pings  # every 0.5 s on a quiet loop
    assert max(b - a for a, b in zip(pings, pings[1:])) < 1.0
    since = time.monotonic()
    os.killpg(process.proc.pid, signal.SIGTERM)
    assert fake.wait_for("STOPPING=1", STOP_SECONDS) - since < 2
    assert_stopped_cleanly(process, since, (port, http))


def test_a_wedged_loop_stops_the_watchdog(site, systemd, serve_process):
    """A TTP App that blocks the loop for 3 s: no WATCHDOG=1 goes out meanwhile, so systemd
    (WatchdogSec=1 here) would restart txm."""
    fake, path = systemd
    apps = site.parent / "TTPApps"
    apps.mkdir()
    (apps / "wedge.py").write_text("import time\n\ndef handle(call):\n    time.sleep(3)\n    return 'OK'\n")
    site.write_text(site.read_text() + "\n[ttpapps]\nwedge = true\n")
    process = serve_process(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    fake.wait_for("READY=1", 30)
    port = process.wait_ready()
    fake.wait_for("WATCHDOG=1", 5)
    with TTPClient("127.0.0.1", port, timeout=10) as meter:
        asked = time.monotonic()
        assert meter.request("TTP /wedge/M1/x s3cret") == "OK"
        answered = time.monotonic()
    time.sleep(1.0)
    during = [when for when in fake.pings() if asked + 0.1 < when < answered - 0.1]
    after = [when for when in fake.pings() if when > answered]
    assert answered - asked >= 2.9
    assert during == [], "the watchdog was fed while the loop was wedged"
    assert after, "the watchdog did not resume once the loop did"
    process.stop()  # and it still stops on SIGTERM: stop() fails the test when it does not
