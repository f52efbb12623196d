"""A meter's side of TTP for tests: a raw connection to a TTP server on 127.0.0.1."""

from __future__ import annotations

import socket

TIMEOUT = 10


class Meter:
    """A raw TTP connection."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def reply(self) -> str:
        while b"\r" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed; had {self.buf!r}")
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\r")
        return line.decode()

    def ask(self, line: str) -> str:
        self.send(line.encode() + b"\r")
        return self.reply()

    def closed(self) -> bool:
        """True when the server closed the connection (EOF) without sending more."""
        self.sock.settimeout(TIMEOUT)
        try:
            data = self.sock.recv(100)
        except ConnectionResetError:
            return True
        return data == b""

    def close(self) -> None:
        self.sock.close()
