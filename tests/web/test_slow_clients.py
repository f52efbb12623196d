"""Clients that never read: a real ``txm serve``, CSV downloads many MB long asked for on raw
sockets with a tiny receive buffer that are then never read. Whoever they are, they must not
take the web server's threads from everyone else."""

from __future__ import annotations

import http.client
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest
import webtest

from tests.conftest import closed_at_the_end, database_values, write_toml
from tests.processes import wait_for
from tests.samples import add_samples
from tests.webutil import add_user
from txm import config
from txm.db import schema
from txm.serve import make_site
from txm.web.app import CSV_PAGE
from txm.web.process import WEB_THREADS

#: Samples of the test unit: about 9 MB of CSV, more than waitress's output watermark and both
#: ends' socket buffers together, so that a download whose client does not read holds its thread.
SAMPLES = 100_000
CSV_PATH = "/units/M1/data.csv?range=all"
#: Seconds within which a page must answer however many downloads are stuck.
PROMPT = 5.0


@pytest.fixture
def big_unit(database):
    unit = schema.Unit.create(code="M1", key="k", name="Big", channels=8)
    add_samples(unit, SAMPLES)
    return unit


class StalledClient:
    """A raw HTTP connection from ``source`` (any 127.x.y.z: another client address) that sends
    one GET and then reads no more than the status line, with a receive buffer kept tiny."""

    def __init__(self, port: int, path: str, source: str = "127.0.0.1", headers: dict[str, str] | None = None):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: a small window
        self.sock.bind((source, 0))
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in (headers or {}).items()),
                 "", ""]
        self.sock.sendall("\r\n".join(lines).encode())

    def status(self) -> int:
        """The response's status code, reading only the status line."""
        line = b""
        while not line.endswith(b"\r\n"):
            byte = self.sock.recv(1)
            if not byte:
                raise AssertionError(f"the connection ended after {line!r}")
            line += byte
        return int(line.split()[1])

    def head(self) -> str:
        """The response's status line and headers."""
        data = b""
        while b"\r\n\r\n" not in data:
            byte = self.sock.recv(1)
            if not byte:
                raise AssertionError(f"the connection ended after {data!r}")
            data += byte
        return data.decode("latin-1")

    def ended(self, timeout: float) -> bool:
        """Does the server close the connection within ``timeout`` (read to its end)?"""
        deadline = time.monotonic() + timeout
        self.sock.settimeout(timeout)
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(65536):
                    return True
        except ConnectionResetError:
            return True
        except TimeoutError:
            pass
        return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def stalled_client():
    """``stalled_client(port, path, source=...)``: a :class:`StalledClient`, closed at the end."""
    with closed_at_the_end(StalledClient) as connect:
        yield connect


def fetch(port: int, path: str, source: str = "127.0.0.1", timeout: float = PROMPT,
          headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    """A whole response, read as fast as it comes, from a client at ``source``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def session_cookie(port: int, username: str) -> str:
    """Log in through the form; the ``Cookie`` header of the session."""
    _, headers, body = fetch(port, "/login")
    token = re.search(rb'name="csrf_token" value="([^"]+)"', body).group(1).decode()
    cookie = headers["Set-Cookie"].split(";", 1)[0]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=PROMPT)
    try:
        connection.request("POST", "/login", urlencode({"username": username, "password": "pass word 1",
                                                        "next": "/", "csrf_token": token}),
                           {"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
        response = connection.getresponse()
        response.read()
        assert response.status == 303, response.status
        return response.headers["Set-Cookie"].split(";", 1)[0]
    finally:
        connection.close()


def start_serve(serve_process, settings, config_file, **values):
    """``txm serve`` on 127.0.0.1, by default without logins (downloads count per address)."""
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1",
                             "LOGIN_REQUIRED": False, **values})
    return serve_process()


def test_downloads_at_once_always_leave_threads_for_pages():
    at_once = next(setting for setting in config.SETTINGS if setting.key == "WEB_DOWNLOADS_AT_ONCE")
    assert at_once.maximum == WEB_THREADS - 2


def test_one_client_with_eight_stalled_downloads_shuts_nobody_out(big_unit, serve_process, settings, config_file,
                                                                  stalled_client):
    port = start_serve(serve_process, settings, config_file).web_port()
    stalled = [stalled_client(port, CSV_PATH, "127.0.0.7") for _ in range(8)]
    statuses = sorted(client.status() for client in stalled)
    started = time.monotonic()
    status, _, body = fetch(port, "/login")
    assert status == 200 and b'name="username"' in body
    assert time.monotonic() - started < PROMPT
    assert statuses == [200, 200] + [429] * 6
    # Another address downloads the whole file meanwhile.
    status, _, body = fetch(port, CSV_PATH, "127.0.0.2", timeout=60)
    assert status == 200 and body.count(b"\r\n") == SAMPLES + 1


def test_downloads_count_per_user_when_logged_in(big_unit, serve_process, settings, config_file, stalled_client):
    for name in ("ann", "bob"):
        add_user(name, is_superuser=True)
    server = start_serve(serve_process, settings, config_file, LOGIN_REQUIRED=True)
    port = server.web_port()
    ann = {"Cookie": session_cookie(port, "ann")}
    stalled = [stalled_client(port, CSV_PATH, headers=ann) for _ in range(2)]
    assert [client.status() for client in stalled] == [200, 200]
    refused = stalled_client(port, CSV_PATH, headers=ann).head()
    assert refused.startswith("HTTP/1.1 429 ") and "Retry-After: 30\r\n" in refused, refused
    # Bob, from the same address, is another user: his download runs.
    status, _, body = fetch(port, CSV_PATH, headers={"Cookie": session_cookie(port, "bob")}, timeout=60)
    assert status == 200 and body.count(b"\r\n") == SAMPLES + 1
    assert ("download of /units/M1/data.csv for user 'ann' refused: 2 of its downloads are running"
            in server.logged("INFO"))


def test_stalled_downloads_are_closed_and_their_threads_freed(big_unit, serve_process, settings, config_file,
                                                             stalled_client):
    server = start_serve(serve_process, settings, config_file, WEB_STALL_SECONDS=2)
    port = server.web_port()
    stalled = [stalled_client(port, CSV_PATH, f"127.0.0.{10 + n}") for n in range(4)]
    assert [client.status() for client in stalled] == [200] * 4
    status, headers, body = fetch(port, CSV_PATH, "127.0.0.20")
    assert status == 503 and headers["Retry-After"] == "30", (status, headers, body)
    assert b"as many downloads as it may at once (4)" in body
    # The stalled downloads are closed once they have taken nothing for 2 s ...
    assert wait_for(lambda: server.logged("WARNING").count("which took nothing of its response") == 4, 15), \
        server.logged()
    for n, client in enumerate(stalled):
        assert client.ended(5)
        assert (f"closed the connection of 127.0.0.{10 + n}, which took nothing of its response "
                f"(GET /units/M1/data.csv) for 2 s") in server.logged("WARNING")
    # ... and their threads and slots are free again: eight requests at once are all served.
    paths = [CSV_PATH] * 4 + ["/login"] * 4
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: fetch(port, paths[n], f"127.0.0.{30 + n}", timeout=60), range(8)))
    assert [r[0] for r in results] == [200] * 8
    assert all(r[2].count(b"\r\n") == SAMPLES + 1 for r in results[:4])
    assert "Traceback" not in server.logged(), server.logged()


def test_a_download_gives_its_slot_back_however_it_ends(settings, database):
    """In-process, through the WSGI interface: the slot is back when a download is read to its
    end, closed midway (the client went away), or never closed and dropped."""
    unit = schema.Unit.create(code="M1", key="k", channels=2)
    add_samples(unit, 3 * CSV_PAGE)  # several pieces
    site = make_site(settings.replace(LOGIN_REQUIRED=False, WEB_DOWNLOADS_AT_ONCE=1))

    def start(address: str = "192.0.2.1"):
        statuses = []
        environ = webtest.TestRequest.blank(CSV_PATH, environ={"REMOTE_ADDR": address}).environ
        body = site(environ, lambda status, headers, exc_info=None: statuses.append(status))
        return statuses[0], body

    status, body = start()
    assert status.startswith("200") and next(iter(body))
    refused, refusal = start("192.0.2.2")  # the one slot in all is taken
    assert refused.startswith("503") and b"(1)" in b"".join(refusal)
    body.close()
    status, body = start("192.0.2.2")
    assert status.startswith("200") and b"".join(body).count(b"\r\n") == 3 * CSV_PAGE + 1
    body.close()
    status, body = start()
    next(iter(body))
    del body  # never closed: dropped
    status, body = start()
    assert status.startswith("200")
    body.close()
