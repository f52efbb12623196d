"""The TTP event loop: one thread, :mod:`selectors`, thousands of meter connections.

The loop only moves bytes. It owns the connections, their buffers and the named limits
(``MAX_REQUEST_BYTES``, ``MAX_CONNECTIONS``, ``CHANNEL_TIMEOUT``) and the ``MAINTENANCE_INTERVAL``
sweep. Each pass reads whatever arrived on every ready connection, frames it (:mod:`txm.framing`)
and parses it (:mod:`txm.ttp.parser`), hands every complete request of the pass to the handler
at once (:meth:`txm.ttp.handler.Handler.handle`, which commits them together) and then writes
all the replies. A connection's replies keep the order of its requests.
"""

from __future__ import annotations

import errno
import logging
import selectors
import socket
import time
from typing import Any, Callable

from txm.config import Settings
from txm.framing import TOO_LONG, Framer
from txm.ttp.handler import Handler
from txm.ttp.parser import ProtocolError, Request, error_reply, parse_request

log = logging.getLogger("txm.ttp")

RECV_BYTES = 65536
#: Most connections accepted per readiness event of the listening socket.
ACCEPTS_PER_EVENT = 256
#: The sweep for dead connections runs at least this often (seconds), even on a quiet server.
SWEEP_SECONDS = 5.0
#: Longest sleep in select(), so stop requests and timers are never far away.
MAX_WAIT = 1.0
#: A connection that had at least this many requests refused gets a summary line when it closes.
SUMMARY_AT = 10

_LISTENER = object()
_WAKER = object()
_BAD_REQUEST = error_reply(400)
_FULL = (error_reply(500) + "\r").encode()


class Connection:
    """One meter connection: its socket, framer, unsent output and timing."""

    __slots__ = ("sock", "fd", "peer", "framer", "since", "out", "close_after", "eof", "events", "refused")

    def __init__(self, sock: socket.socket, peer: Any, max_bytes: int, now: float):
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.framer = Framer(max_bytes)
        self.since = now  # connect time, or when the last complete request arrived
        self.out = b""
        self.close_after = False  # close once the replies are written
        self.eof = False
        self.events = selectors.EVENT_READ
        self.refused = 0  # requests answered with an error code

    def describe(self) -> str:
        try:
            host, port = self.peer[0], self.peer[1]
            return f"{host}:{port}"
        except (TypeError, IndexError):
            return str(self.peer)


class Loop:
    """The selectors loop. ``run()`` until ``stop()``; the handler is flushed on the way out."""

    def __init__(self, settings: Settings, handler: Handler, listener: socket.socket,
                 heartbeat: Callable[[float], Any] | None = None, heartbeat_interval: float | None = None):
        """``heartbeat(now)`` is called after every pass, and passes come at least every
        ``heartbeat_interval`` seconds on a quiet server (the systemd watchdog: a loop that
        wedges stops calling it)."""
        self.settings = settings
        self.refusals = handler.refusals
        self.heartbeat = heartbeat
        self.max_wait = min(MAX_WAIT, heartbeat_interval) if heartbeat_interval else MAX_WAIT
        self.handler = handler
        self.listener = listener
        self.max_bytes = settings.MAX_REQUEST_BYTES
        self.max_connections = settings.MAX_CONNECTIONS
        self.timeout = settings.CHANNEL_TIMEOUT
        self.keep_open = settings.SOCKET_OPEN
        self.maintenance_interval = settings.MAINTENANCE_INTERVAL
        self.sweep_seconds = min(SWEEP_SECONDS, max(0.05, self.timeout / 4))
        self.connections: dict[int, Connection] = {}
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self.closed = False
        self._requests_since_sweep = 0
        self._next_sweep = 0.0
        self._accept_paused_until = 0.0
        self._refused = 0
        self._last_refusal_log = 0.0

    # --- control ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish its pass and return (callable from any thread or a signal handler)."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    @property
    def port(self) -> int:
        return self.listener.getsockname()[1]

    def run(self) -> None:
        sel = self.selector
        sel.register(self.listener, selectors.EVENT_READ, _LISTENER)
        sel.register(self._wake_r, selectors.EVENT_READ, _WAKER)
        self.handler.open()
        self._next_sweep = time.monotonic() + self.sweep_seconds
        try:
            while not self._stopping:
                self._pass()
        finally:
            self.close()

    def close(self) -> None:
        """Flush the handler's pending commits and close every socket; once (``run`` ends with it)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.handler.close()
        finally:
            self._shutdown()
            self.refusals.flush()

    # --- one pass ----------------------------------------------------------------------------------

    def _wait(self, now: float) -> float:
        wait = min(self.max_wait, self._next_sweep - now)
        deadline = self.handler.next_deadline()
        if deadline is not None:
            wait = min(wait, deadline - now)
        if self._accept_paused_until:
            wait = min(wait, self._accept_paused_until - now)
        return max(0.0, wait)

    def _pass(self) -> None:
        now = time.monotonic()
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self.selector.register(self.listener, selectors.EVENT_READ, _LISTENER)
        events = self.selector.select(self._wait(now))
        now = time.monotonic()
        items: list[tuple[Connection, Any]] = []
        for key, mask in events:
            data = key.data
            if data is _LISTENER:
                self._accept(now)
            elif data is _WAKER:
                try:
                    self._wake_r.recv(4096)
                except OSError:
                    pass
            else:
                try:
                    if mask & selectors.EVENT_WRITE:
                        self._write_pending(data)
                    if mask & selectors.EVENT_READ and self.connections.get(data.fd) is data:
                        self._read(data, now, items)
                except Exception:  # a bug must cost one connection, never the loop
                    log.exception("%s: unexpected failure; closing the connection", data.describe())
                    items = [item for item in items if item[0] is not data]
                    self._close(data)
        if items:
            try:
                self._answer(items)
            except Exception:
                log.exception("unexpected failure answering %d request(s); closing their connections", len(items))
                for conn in {conn for conn, _ in items}:
                    self._close(conn)
        self.handler.tick()
        if self.heartbeat is not None:
            self.heartbeat(now)
        if self._requests_since_sweep >= self.maintenance_interval or now >= self._next_sweep:
            self._sweep(time.monotonic())

    def _accept(self, now: float) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock, peer = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("cannot accept more connections: %s; pausing accepts for 0.1 s", exc.strerror)
                    self.selector.unregister(self.listener)
                    self._accept_paused_until = now + 0.1
                    return
                log.debug("accept failed: %s", exc)
                continue
            if len(self.connections) >= self.max_connections:
                self._refuse(sock, now)
                continue
            sock.setblocking(False)
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
            conn = Connection(sock, peer, self.max_bytes, now)
            self.connections[conn.fd] = conn
            self.selector.register(sock, selectors.EVENT_READ, conn)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: connected (%d open)", conn.describe(), len(self.connections))

    def _refuse(self, sock: socket.socket, now: float) -> None:
        self._refused += 1
        try:
            sock.setblocking(False)
            sock.send(_FULL)
        except OSError:
            pass
        sock.close()
        if now - self._last_refusal_log >= 10:
            log.warning("MAX_CONNECTIONS (%d) reached: refused %d connection(s)", self.max_connections,
                        self._refused)
            self._refused = 0
            self._last_refusal_log = now

    def _read(self, conn: Connection, now: float, items: list) -> None:
        try:
            data = conn.sock.recv(RECV_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("%s: receive failed: %s", conn.describe(), exc)
            self._close(conn)
            return
        if not data:
            conn.eof = True
            conn.close_after = True
            if not conn.out:
                self._close(conn)
            return
        if conn.close_after:
            return  # the connection is closing: later requests are not answered
        lines = conn.framer.feed(data)
        if not lines:
            return
        conn.since = now
        for line in lines:
            if line is TOO_LONG:
                conn.refused += 1
                self.refusals.event((400, conn.peer[0] if isinstance(conn.peer, tuple) else conn.peer, "long"),
                                      logging.INFO, "%s: 400 (request longer than MAX_REQUEST_BYTES %d); closing",
                                      conn.describe(), self.max_bytes)
                items.append((conn, _BAD_REQUEST))
                conn.close_after = True
                break
            try:
                items.append((conn, parse_request(line)))
            except ProtocolError as exc:
                conn.refused += 1
                self.refusals.event((400, conn.peer[0] if isinstance(conn.peer, tuple) else conn.peer, exc.reason),
                                      logging.INFO, "%s: 400 (%s)", conn.describe(), exc.reason)
                items.append((conn, exc.reply()))
            if not self.keep_open:
                conn.close_after = True
                break

    def _answer(self, items: list[tuple[Connection, Any]]) -> None:
        requests = [item for _, item in items if isinstance(item, Request)]
        self._requests_since_sweep += len(requests)
        replies = iter(self.handler.handle(requests)) if requests else iter(())
        out: dict[Connection, list[str]] = {}
        for conn, item in items:
            if isinstance(item, Request):
                reply = next(replies)
                if reply[0] != "O":  # an error code, not OK
                    conn.refused += 1
            else:
                reply = item
            lst = out.get(conn)
            if lst is None:
                out[conn] = [reply]
            else:
                lst.append(reply)
        for conn, lines in out.items():
            if self.connections.get(conn.fd) is not conn:
                continue
            self._send(conn, ("\r".join(lines) + "\r").encode("utf-8"))

    # --- writing and closing -----------------------------------------------------------------------

    def _send(self, conn: Connection, data: bytes) -> None:
        if conn.out:
            conn.out += data
        else:
            try:
                sent = conn.sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                log.debug("%s: send failed: %s", conn.describe(), exc)
                self._close(conn)
                return
            conn.out = data[sent:]
        self._after_write(conn)

    def _write_pending(self, conn: Connection) -> None:
        if not conn.out:
            return
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("%s: send failed: %s", conn.describe(), exc)
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        self._after_write(conn)

    def _after_write(self, conn: Connection) -> None:
        if conn.out:
            # Wait until the peer reads; read no more from it meanwhile (bounded output).
            self._set_events(conn, selectors.EVENT_WRITE)
        elif conn.close_after:
            self._close(conn)
        else:
            self._set_events(conn, selectors.EVENT_READ)

    def _set_events(self, conn: Connection, events: int) -> None:
        if conn.events != events:
            conn.events = events
            self.selector.modify(conn.sock, events, conn)

    def _close(self, conn: Connection) -> None:
        if self.connections.get(conn.fd) is not conn:
            return
        del self.connections[conn.fd]
        if conn.refused >= SUMMARY_AT:
            log.info("%s: closed; %d of its requests were refused", conn.describe(), conn.refused)
        try:
            self.selector.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        try:
            conn.sock.close()
        except OSError:
            pass

    def _sweep(self, now: float) -> None:
        """Close connections that stalled mid-request, sat idle or did not read their replies."""
        self._requests_since_sweep = 0
        self._next_sweep = now + self.sweep_seconds
        limit = now - self.timeout
        dead = [c for c in self.connections.values() if c.since < limit]
        for conn in dead:
            log.info("%s: closed after %.1f s without a complete request (CHANNEL_TIMEOUT)",
                     conn.describe(), now - conn.since)
            self._close(conn)

    def _shutdown(self) -> None:
        for conn in list(self.connections.values()):
            self._close(conn)
        for sock in (self.listener, self._wake_r, self._wake_w):
            try:
                self.selector.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()
        self.selector.close()
