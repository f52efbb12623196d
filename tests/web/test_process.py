"""The web interface inside a real ``txm serve``: its start-up line, port errors, stopping with it."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from tests.conftest import TXM, database_values, txm_subprocess_env, write_toml


def get(url: str) -> tuple[int, dict, str]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=10) as res:
            return res.status, dict(res.headers), res.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def _port_closed(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return False
    except OSError:
        return True


def test_serve_reports_the_real_web_port_and_serves_pages(serve_process, settings, config_file):
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    process = serve_process()
    port = process.web_port()
    assert port != 0
    status, headers, _ = get(f"http://127.0.0.1:{port}/")
    assert status == 303 and headers["Location"].endswith("/login?next=/")
    status, headers, body = get(f"http://127.0.0.1:{port}/login")
    assert status == 200 and 'name="username"' in body and headers["Server"] == "txm"
    assert process.stop() == 0
    assert _port_closed(port)


def test_web_port_in_use_stops_serve_with_one_line(settings, config_file):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": port,
                                 "BIND_ADDRESS": "127.0.0.1"})
        result = subprocess.run([*TXM, "--config", str(config_file), "serve"], capture_output=True, text=True,
                                env=txm_subprocess_env(), timeout=60)
    assert result.returncode == 1, result
    assert f"cannot listen for HTTP on 127.0.0.1:{port}: Address already in use" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_web_process_ends_when_serve_is_killed(serve_process, settings, config_file):
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    process = serve_process()
    port = process.web_port()
    process.proc.send_signal(signal.SIGKILL)
    process.proc.wait(10)
    deadline = time.monotonic() + 15
    while not _port_closed(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _port_closed(port), "the web process outlived its parent"


def _raw_get(port: int, path: str, headers: dict[str, str]) -> str:
    """The status line and headers of a GET sent byte by byte (urllib would add its own Host)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        lines = [f"GET {path} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
        sock.sendall("\r\n".join(lines).encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n\r\n", 1)[0].decode()


def test_proxy_headers_are_believed_only_from_the_trusted_proxy(serve_process, settings, config_file):
    headers = {"Host": "127.0.0.1", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "meters.example.com",
               "X-Forwarded-For": "203.0.113.9"}
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0,
                             "BIND_ADDRESS": "127.0.0.1"})
    process = serve_process()
    head = _raw_get(process.web_port(), "/", headers)
    assert "Location: http://127.0.0.1/login?next=/" in head, head  # not believed
    assert process.stop() == 0
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0,
                             "BIND_ADDRESS": "127.0.0.1", "TRUSTED_PROXY": "127.0.0.1"})
    process = serve_process()
    head = _raw_get(process.web_port(), "/", headers)
    assert "Location: https://meters.example.com/login?next=/" in head, head
    assert process.stop() == 0


def test_a_web_process_that_dies_is_started_again(settings, database):
    import os

    from txm.serve import make_site
    from txm.web.process import WebService

    service = WebService(settings.replace(HTTP_PORT=0, BIND_ADDRESS="127.0.0.1"), make_site)
    service.start()
    try:
        port, first = service.port, service.pid
        assert get(f"http://127.0.0.1:{port}/login")[0] == 200
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (service.restarts == 0 or service.pid == first) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert service.restarts == 1 and service.pid != first
        assert get(f"http://127.0.0.1:{port}/login")[0] == 200  # the same port, served again
    finally:
        service.stop()
    assert _port_closed(port)
