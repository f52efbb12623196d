"""A real SMTP server for tests: aiosmtpd on port 0, recording what it receives.

:class:`SMTPServer` can require STARTTLS (or speak TLS from the start) with a self-signed
certificate made at test time, require a login, refuse messages with a given reply, and be
*held*: it accepts connections but says nothing until released, like a server that hangs.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import socket
import ssl
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: email.message.EmailMessage
    tls: bool
    login: str | None

    @property
    def body(self) -> str:
        return self.message.get_content().replace("\r\n", "\n")  # as sent, without the wire's CR LF


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1: (certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / "smtp-cert.pem", folder / "smtp-key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


class _Recorder:
    def __init__(self, server: "SMTPServer"):
        self.server = server

    async def handle_DATA(self, smtp, session, envelope):
        if self.server.on_data is not None:
            self.server.on_data()
        with self.server.lock:
            if self.server.refusals:
                return self.server.refusals.pop(0)
            message = email.message_from_bytes(envelope.original_content or envelope.content,
                                               policy=email.policy.default)
            login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
            self.server.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message,
                                                 smtp.transport.get_extra_info("ssl_object") is not None, login))
            self.server.arrived.notify_all()
        return "250 Message accepted"


class _CountedSMTP(SMTP):
    def __init__(self, controller: "_Controller", *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._controller = controller

    def connection_made(self, transport):
        self._controller.open_sessions.add(self)  # STARTTLS calls this twice; a set counts once
        super().connection_made(transport)

    def connection_lost(self, error):
        self._controller.open_sessions.discard(self)
        super().connection_lost(error)


class _Controller(Controller):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.open_sessions: set[SMTP] = set()  # changed in the server's event loop thread only

    def factory(self):
        with warnings.catch_warnings():  # a login over implicit TLS is safe; aiosmtpd cannot tell
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS", UserWarning)
            return _CountedSMTP(self, self.handler, **self.SMTP_kwargs)

    def stop(self, *args, **kwargs):
        # Let sessions finish closing (a TLS close takes a round trip) so none is left open.
        deadline = time.monotonic() + 5
        while self.open_sessions and time.monotonic() < deadline:
            time.sleep(0.01)
        super().stop(*args, **kwargs)

    def _trigger_server(self):
        # Bound to port 0: learn the real port first. The readiness probe says QUIT before it
        # closes, so the server closes its side too (aiosmtpd's own probe leaves it open over TLS).
        self.port = self.server.sockets[0].getsockname()[1]
        with socket.create_connection((self.hostname, self.port), 5) as sock:
            if self.ssl_context:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                sock = context.wrap_socket(sock)
            with sock:
                sock.recv(1024)
                sock.sendall(b"QUIT\r\n")
                while sock.recv(1024):
                    pass


class SMTPServer:
    """Use as a context manager; ``port``, ``messages``, ``refusals`` (replies to give to the next
    DATA commands instead of accepting, e.g. ``"451 try later"``) and ``on_data`` (called as each
    message arrives, before it is accepted)."""

    def __init__(self, *, starttls_cert: tuple[Path, Path] | None = None, tls_cert: tuple[Path, Path] | None = None,
                 login: tuple[str, str] | None = None):
        self.messages: list[Received] = []
        self.refusals: list[str] = []
        self.on_data: Callable[[], None] | None = None
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        kwargs: dict = {}
        if starttls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*map(str, starttls_cert))
            kwargs.update(tls_context=context, require_starttls=True)
        if tls_cert:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*map(str, tls_cert))
            kwargs.update(ssl_context=context)
        if login:
            def authenticate(server, session, envelope, mechanism, auth_data):
                ok = isinstance(auth_data, LoginPassword) and (auth_data.login.decode(),
                                                               auth_data.password.decode()) == login
                return AuthResult(success=ok, handled=False, auth_data=auth_data)

            kwargs.update(authenticator=authenticate, auth_required=True,
                          # aiosmtpd counts only STARTTLS as TLS here; over implicit TLS the login is
                          # encrypted all the same.
                          auth_require_tls=bool(starttls_cert))
        self.controller = _Controller(_Recorder(self), hostname="127.0.0.1", port=0, ready_timeout=10, **kwargs)

    @property
    def port(self) -> int:
        return self.controller.port

    def __enter__(self) -> "SMTPServer":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def wait_for(self, count: int, timeout: float = 20) -> list[Received]:
        """Wait until ``count`` messages have arrived; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} email(s) arrived, expected {count}")
                self.arrived.wait(left)
            return list(self.messages)


class SilentServer:
    """Accepts SMTP connections and says nothing until :meth:`release`, then closes them:
    an SMTP server that hangs. ``connected`` is set once a client is in."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self.released = threading.Event()
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            self.connected.set()
            if self.released.is_set():
                conn.close()

    def __enter__(self) -> "SilentServer":
        self._thread.start()
        return self

    def release(self) -> None:
        """Close every held connection and stop listening: from now on nothing answers."""
        self.released.set()
        self.listener.close()
        for conn in self.connections:
            conn.close()

    def __exit__(self, *exc) -> None:
        if not self.released.is_set():
            self.release()
        self._thread.join(5)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
