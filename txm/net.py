"""Listening sockets: the one way txm opens a TCP port (TTP, the web interface, Data Export)."""

from __future__ import annotations

import socket

from txm.errors import TxmError


def listen(address: str, port: int, what: str, backlog: int = 4096, start: bool = True) -> socket.socket:
    """A bound, non-blocking TCP socket on ``address:port``, listening unless ``start`` is false
    (then call :func:`start_listening` once ready to serve: until then connections are refused,
    not left waiting). ``port`` 0 binds any free port (``getsockname()`` tells which).

    A port that cannot be had is a :class:`TxmError` naming ``what`` listens there:
    ``cannot listen for TTP on 0.0.0.0:9995: Address already in use``.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if start:
            start_listening(sock, backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise TxmError(f"cannot listen for {what} on {address}:{port}: {exc.strerror or exc}") from None
    except BaseException:
        sock.close()
        raise
    return sock


def start_listening(sock: socket.socket, backlog: int = 4096) -> None:
    """Open a bound socket for connections (the kernel caps ``backlog`` at somaxconn)."""
    sock.listen(min(backlog, socket.SOMAXCONN) if socket.SOMAXCONN > 128 else backlog)
