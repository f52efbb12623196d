"""systemd's service notifications (``Type=notify``), spoken as ``sd_notify(3)`` documents them.

When systemd starts txm with ``Type=notify`` it sets ``$NOTIFY_SOCKET``, the path of an
``AF_UNIX`` datagram socket (a leading ``@`` names one in the abstract namespace). txm sends
newline-separated ``KEY=VALUE`` lines there:

* ``READY=1`` once the TTP loop, the web interface and the other services really serve, so
  ``systemctl start`` returns when meters can be answered and units ordered after txm wait
  for that;
* ``STOPPING=1`` when it begins to stop;
* ``WATCHDOG=1`` at half the interval systemd gives in ``$WATCHDOG_USEC`` (``WatchdogSec=``),
  sent by the TTP loop between two passes: a loop that wedges stops the pings, and systemd
  restarts txm.

The protocol is one datagram per message; the library ``libsystemd`` is not needed for it.
Without ``$NOTIFY_SOCKET`` (any start not under ``Type=notify``) every call does nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Mapping

log = logging.getLogger("txm.systemd")


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # the abstract namespace
    if value.startswith("/"):
        return value
    return None


class Notifier:
    """Sends notifications to systemd, or nothing when txm was not started by it.

    ``environ`` defaults to the process's environment; systemd's variables are read once.
    ``$WATCHDOG_PID``, when set, must be this process, as systemd means it to be.
    """

    def __init__(self, environ: Mapping[str, str] | None = None):
        env = os.environ if environ is None else environ
        self.socket_name = env.get("NOTIFY_SOCKET", "")
        self.address = _address(self.socket_name)
        self.watchdog_interval: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if self.address is not None and usec.isdigit() and int(usec) > 0 and (
                not pid or (pid.isdigit() and int(pid) == os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2
        self._next_ping = 0.0
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *states: str) -> bool:
        """Send ``states`` (``"READY=1"``, ...) as one message; False when not sent."""
        if self.address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(self.address)
                sock.sendall("\n".join(states).encode())
        except OSError as exc:
            if not self._failed:  # one line, not one per watchdog ping
                log.warning("cannot notify systemd through %s: %s", self.socket_name, exc.strerror or exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        self.notify("STOPPING=1")

    def heartbeat(self, now: float | None = None) -> None:
        """Send ``WATCHDOG=1`` when half the watchdog interval has passed since the last one.

        Cheap enough for every pass of the TTP loop: without a watchdog it only compares.
        """
        if self.watchdog_interval is None:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next_ping:
            self._next_ping = now + self.watchdog_interval
            self.notify("WATCHDOG=1")
