"""A TTP client, as a meter would talk: ``TTPClient`` for Python, behind ``txm send-ttp``.

>>> with TTPClient("localhost", 9995) as client:          # doctest: +SKIP
...     client.upload("M1", "s3cret", [(datetime.now(), [11, 22.5])])
...     client.last("M1", "s3cret")
LastSample(id=1, timestamp=datetime(...), values=[11.0, 22.5], labels=None)

A reply with an error code raises :class:`TTPReplyError` carrying the code (``exc.code``,
``406``) and the whole reply; not reaching the server raises :class:`TTPConnectionError`.
"""

from __future__ import annotations

import collections
import datetime as dt
import re
import socket
from dataclasses import dataclass
from typing import Iterable, Sequence

from txm.errors import TxmError
from txm.framing import Framer
from txm.timestamps import format_timestamp


class TTPConnectionError(TxmError):
    """The server could not be reached, or the connection broke."""

    exit_code = 2


class TTPReplyError(TxmError):
    """The server answered a request with an error code."""

    exit_code = 1

    def __init__(self, reply: str):
        super().__init__(reply)
        self.reply = reply
        head = reply.split(" ", 1)[0]
        self.code = int(head) if head.isdigit() else 0


@dataclass(frozen=True)
class LastSample:
    """A download reply: the sample's id, timestamp and values (and labels when the unit shows them)."""

    id: int
    timestamp: dt.datetime
    values: list[float]
    labels: list[str] | None = None


def format_sample(timestamp: dt.datetime, values: Iterable[float | int | str]) -> str:
    """One sample in upload form: ``<2009-01-16 15:30:45;11;22>`` (microseconds when present)."""
    parts = [format_timestamp(timestamp)]
    for v in values:
        if isinstance(v, float) and v.is_integer() and abs(v) < 1e16:
            parts.append(str(int(v)))
        else:
            parts.append(str(v))
    return "<" + ";".join(parts) + ">"


_LAST_RE = re.compile(r"OK <(\d+) (\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?)((?: \S+)*)>\Z")


class TTPClient:
    """One TTP connection. Use as a context manager, or call :meth:`close`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9995, timeout: float = 30.0):
        self.host = host
        self.port = port
        self.timeout = timeout
        self._sock: socket.socket | None = None
        self._framer = Framer(None, ends="cr")  # replies end with CR (or CR LF)
        self._replies: collections.deque[bytes] = collections.deque()  # received, not yet returned

    def __enter__(self) -> "TTPClient":
        self.connect()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def connect(self) -> None:
        if self._sock is not None:
            return
        try:
            self._sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise TTPConnectionError(f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._framer = Framer(None, ends="cr")
        self._replies.clear()

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def request(self, line: str) -> str:
        """Send one raw request line (CR added) and return the reply without its CR.

        No error is raised for an error reply; see :meth:`check`. Reconnects once when the
        server closed the connection in between (``SOCKET_OPEN: no``).
        """
        for attempt in (1, 2):
            self.connect()
            assert self._sock is not None
            try:
                self._sock.sendall(line.rstrip("\r\n").encode("utf-8") + b"\r")
                return self._read_reply()
            except (ConnectionError, EOFError) as exc:
                self.close()
                if attempt == 2 or self._framer.pending or self._replies:
                    raise TTPConnectionError(f"connection to {self.host}:{self.port} broke: {exc}") from None
            except OSError as exc:
                self.close()
                raise TTPConnectionError(f"connection to {self.host}:{self.port} failed: {exc}") from None
        raise AssertionError("unreachable")

    def _read_reply(self) -> str:
        assert self._sock is not None
        while not self._replies:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise EOFError("the server closed the connection without a reply")
            self._replies.extend(self._framer.feed(chunk))
        return self._replies.popleft().decode("utf-8", "replace")

    @staticmethod
    def check(reply: str) -> str:
        """Return an ``OK`` reply; raise :class:`TTPReplyError` for an error reply."""
        if reply == "OK" or reply.startswith("OK "):
            return reply
        raise TTPReplyError(reply)

    def upload(self, code: str, key: str,
               samples: Sequence[tuple[dt.datetime, Sequence[float | int | str]]]) -> str:
        """Upload ``(timestamp, values)`` samples in one request; return the ``OK`` reply."""
        if not samples:
            raise ValueError("upload needs at least one sample")
        body = "".join(format_sample(ts, values) for ts, values in samples)
        return self.check(self.request(f"TTP /up/{code}/{body} {key}"))

    def last(self, code: str, key: str) -> LastSample:
        """The unit's newest sample."""
        reply = self.check(self.request(f"TTP /dl/{code}/last {key}"))
        return parse_last(reply)


def parse_last(reply: str) -> LastSample:
    """Parse ``OK <id YYYY-MM-DD HH:MM:SS[.ffffff] v1 v2 ...>`` (values may be ``label=value``)."""
    match = _LAST_RE.match(reply)
    if match is None:
        raise TTPReplyError(f"unexpected download reply: {reply[:200]}")
    ident, stamp, rest = match.groups()
    labels: list[str] = []
    values: list[float] = []
    for item in rest.split():
        label, sep, value = item.rpartition("=")
        if sep:
            labels.append(label)
        values.append(float(value))
    return LastSample(int(ident), dt.datetime.fromisoformat(stamp), values, labels or None)
