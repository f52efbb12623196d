"""What the alarm tests share: ``txm serve`` in a thread, with its email worker, against an SMTP port.

Each test module gives its own ``people`` fixture (the units and mailing lists it needs).
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest

from txm.serve import ServerThread

#: Seconds a server in these tests has to start and to stop.
TIMEOUT = 20


def server_settings(settings, smtp_port: int, **values):
    """The settings with the SMTP server at ``smtp_port`` and quick first retries (then twice as
    long each time); ``values`` override any of them."""
    base = {"DS_PORT": 0, "BIND_ADDRESS": "127.0.0.1", "EMAIL_HOST": "127.0.0.1", "EMAIL_PORT": smtp_port,
            "EMAIL_TIMEOUT": 5.0, "DEFAULT_FROM_EMAIL": "txm@example.com", "ALARM_EMAIL_RETRY_DELAY": 0.05}
    return settings.replace(**{**base, **values})


@pytest.fixture
def serve(settings, people):
    """``serve(smtp_port, **settings)``: ``txm serve`` in a thread (with its email worker);
    stopped at the end of the test."""
    running = []

    def start(smtp_port: int, **values) -> ServerThread:
        server = ServerThread(server_settings(settings, smtp_port, **values), timeout=TIMEOUT).start()
        running.append(server)
        return server

    yield start
    for server in running:
        server.stop()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT,
               state: Callable[[], Any] | None = None) -> Any:
    """``condition()``'s first true result, tried every 20 ms; after ``timeout`` seconds an
    AssertionError naming ``what`` (and ``state()``, when given, to show what there was)."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f": {state()}" if state else ""))
        time.sleep(0.02)
