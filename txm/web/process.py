"""The web interface in a child process of ``txm serve``: :class:`WebService` and the child's
:func:`run_web_process`.

A child process, so that a big graph render or CSV download never holds the GIL the TTP loop
needs; waitress serves the site there with a pool of threads. What the site is, the caller
says: ``make_site(settings)``, a module-level function the child imports and calls
(``txm serve`` passes :func:`txm.serve.make_site`: the pages, the admin panel, HTTP Apps).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import struct
import threading
import time
import weakref
from multiprocessing import resource_tracker
from typing import Any, Callable

from txm import net
from txm.config import Settings
from txm.db.database import open_database
from txm.errors import TxmError
from txm.logs import log_to_stderr
from txm.web import httpapps

log = logging.getLogger("txm.web")

#: Threads of waitress serving requests in the web process.
WEB_THREADS = 8
#: How much lower the web process's CPU priority is than the TTP server's (see ``nice``).
WEB_NICENESS = 10
#: Bytes of a response waitress holds for a slow client before the app's thread waits.
OUTPUT_WATERMARK = 1 << 20
#: Stalled clients are looked for about this many times per ``WEB_STALL_SECONDS`` (at most every
#: 30 s, at least every second): a stalled one is closed within a third more than the setting.
STALL_CHECKS = 3
#: Seconds ``txm serve`` waits for the web process to be ready.
START_TIMEOUT = 60.0
#: Seconds the web process has to stop once asked, before it is terminated, then killed.
STOP_TIMEOUT = 5.0
#: The signals blocked while a web process is spawned: it unblocks them once it can handle them,
#: so a signal to the process group during its start-up never ends it with a traceback.
_START_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class WebService:
    """The web server in a child process, with the socket bound here in the parent.

    Binding in the parent (:meth:`prepare`, before ``txm serve`` touches the database) makes a
    port already in use stop ``txm serve`` at once with a one-line reason, and makes
    ``HTTP_PORT`` 0 report the real port; the HTTP Apps are found then too. The child gets the
    socket, opens its own database connection, builds the app, says ready (or why not) over a
    pipe, and serves with waitress until asked to stop.

    Stopping goes through a second pipe that only the parent holds open for writing: the
    parent closes it to ask the child to stop, and when the parent dies, even by SIGKILL, the
    kernel closes it and the child stops within a second instead of holding the HTTP port.
    (Not a ``multiprocessing.Event``: its ``set()`` waits for every waiter to wake, and a
    waiter killed by a signal never does.) SIGTERM to the child alone stops it cleanly too.

    The parent keeps the listening socket: should the child die while txm is not stopping (a
    crash, the kernel's out-of-memory killer), a watcher thread logs it and starts a new child
    on the same socket, and browsers' connections wait in the socket's queue meanwhile. Once
    ``stopping`` (the server's event) is set, no child is started again.
    """

    name = "web"

    def __init__(self, settings: Settings, make_site: Callable[[Settings], Any],
                 stopping: threading.Event | None = None):
        """``make_site(settings)`` builds the WSGI app in the child: a module-level function
        (the child imports it by name); ``stopping`` is the server's event (none: the service's own)."""
        self.settings = settings
        self.make_site = make_site
        self.port: int | None = None
        self.description = ""
        self.restarts = 0
        self.apps: list[tuple[str, str | None, str]] = []  # (name, mount point, where found)
        self._sock: socket.socket | None = None
        self._process: multiprocessing.Process | None = None
        self._stop_writer: Any = None  # closing it asks the child to stop
        self._stopping = stopping if stopping is not None else threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()  # one child started or ended at a time
        self._ctx = multiprocessing.get_context("spawn")

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def prepare(self) -> None:
        """Bind the HTTP port and find the HTTP Apps (TxmError saying why not)."""
        if self._sock is None:
            self.apps = httpapps.find_apps(self.settings)
            self._sock = net.listen(self.settings.BIND_ADDRESS, self.settings.HTTP_PORT, "HTTP", backlog=1024)
            self.port = self._sock.getsockname()[1]

    def start(self) -> None:
        self.prepare()
        try:
            self._spawn()
        except BaseException:
            self.stop()
            raise
        host = self.settings.BIND_ADDRESS
        shown = f"[{host}]" if ":" in host else host
        lines = [f"Web interface listening on http://{shown}:{self.port}/"]
        if self.apps:
            lines.append("HTTP Apps: " + ", ".join(f"{name} at {prefix}" if prefix else f"{name} (not mounted)"
                                                   for name, prefix, _ in self.apps))
        self.description = "\n".join(lines)
        self._watcher = threading.Thread(target=self._watch, name="txm-web-watcher", daemon=True)
        self._watcher.start()

    def _spawn(self) -> None:
        """Start a child on the socket and wait until it is ready; TxmError saying why not."""
        with self._lock:
            if self._stopping.is_set():
                return
            ready_reader, ready_writer = self._ctx.Pipe(duplex=False)
            stop_reader, self._stop_writer = self._ctx.Pipe(duplex=False)
            process = self._ctx.Process(target=run_web_process, name="txm-web", daemon=True,
                                        args=(self.make_site, _settings_state(self.settings), self._sock, ready_writer,
                                              stop_reader))
            self._process = process
            # The first start of a spawned process launches multiprocessing's resource tracker,
            # which *unblocks* SIGINT and SIGTERM once it has: launched first, it leaves the
            # signals blocked for the spawn below.
            resource_tracker.ensure_running()
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _START_SIGNALS)
            try:
                process.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
                ready_writer.close()
                stop_reader.close()
        message = None
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while not self._stopping.is_set() and time.monotonic() < deadline:
                if ready_reader.poll(0.1):
                    message = ready_reader.recv()
                    break
        except EOFError:
            message = None
        finally:
            ready_reader.close()
        if message != "ready":
            self._end_child()
            if self._stopping.is_set():
                return
            if isinstance(message, tuple):
                error = TxmError(message[1])
                error.exit_code = message[0]  # 2 for a configuration error, as the CLI documents
                raise error
            raise TxmError(f"the web interface did not start (its process ended with code {process.exitcode})")

    def _watch(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            process.join(0.5)
            if process.is_alive() or self._stopping.is_set():
                continue
            # The stop of the whole service group (a signal to it) reaches the child first at
            # times: wait a moment for the parent's own stop before starting a child again.
            if self._stopping.wait(delay):
                return
            log.error("the web process ended unexpectedly (exit code %s); starting it again", process.exitcode)
            try:
                self._spawn()
                self.restarts += 1
                delay = 1.0
            except TxmError as exc:
                log.error("the web interface cannot start again: %s", exc)
                delay = min(delay * 2, 60.0)

    def _end_child(self) -> None:
        """Ask the child to stop and wait; terminate, then kill one that does not."""
        with self._lock:
            process, writer = self._process, self._stop_writer
            self._stop_writer = None
            if writer is not None:
                writer.close()
            if process is None or process.pid is None:
                return
            process.join(STOP_TIMEOUT)
            if process.is_alive():
                log.warning("the web process did not stop within %.0f s; terminating it", STOP_TIMEOUT)
                process.terminate()
                process.join(2)
            if process.is_alive():
                process.kill()
                process.join(2)

    def stop(self) -> None:
        self._stopping.set()
        self._end_child()  # the watcher, seeing stopping set, starts no other
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(START_TIMEOUT)
        self._end_child()  # one the watcher was starting meanwhile
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def close_stalled_clients(server: Any, seconds: float) -> None:
    """Make a waitress ``server`` close each connection whose client has taken none of a
    response waiting for it for ``seconds`` (``WEB_STALL_SECONDS``), freeing the thread that
    serves it.

    Waitress alone never does: the thread writing a response waits, without a timeout, for the
    client to take bytes once more than ``OUTPUT_WATERMARK`` of it is waiting
    (``HTTPChannel._flush_outbufs_below_high_watermark``), and its ``channel_timeout`` closes
    only connections with no request running -- nor can even those close while the kernel
    holds unsent bytes for a client that does not read, as the loop closes a connection only
    once its socket is writable. So a download whose client stopped reading would hold its
    thread, and its connection, for as long as the client stays connected.

    Waitress checks its connections every ``cleanup_interval`` seconds on its loop's thread
    (``maintenance``); after its own check, this one finds the connections with output waiting
    whose last progress (``last_activity``: bytes sent or received) is older than ``seconds``
    and shuts their sockets down, after setting them to be reset rather than lingering on
    close. The socket then polls writable, the loop's next send fails, and waitress closes the
    connection on its own thread the usual way: the waiting thread wakes, the response ends
    (``ClientDisconnected``, which waitress logs), the app's iterator is closed and the thread
    is free. One warning is logged per connection closed.
    """
    own_maintenance = server.maintenance
    closed: weakref.WeakSet = weakref.WeakSet()

    def maintenance(now: float) -> None:
        own_maintenance(now)
        cutoff = now - seconds
        for channel in list(server.active_channels.values()):
            waiting = channel.total_outbufs_len or channel.close_when_flushed
            if not waiting or channel.last_activity >= cutoff or channel in closed:
                continue
            closed.add(channel)
            requests = list(channel.requests)
            what = f"{requests[0].command} {requests[0].path}" if requests else "the end of a response"
            try:
                channel.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                channel.socket.shutdown(socket.SHUT_RDWR)
            except OSError:  # closed meanwhile: nothing to free
                continue
            address = channel.addr[0] if isinstance(channel.addr, tuple) else channel.addr
            log.warning("closed the connection of %s, which took nothing of its response (%s) for %.0f s",
                        address, what, seconds)

    server.maintenance = maintenance


def _settings_state(settings: Settings) -> tuple:
    """The settings as plain picklable parts (Settings itself answers every attribute)."""
    return (dict(settings.values), dict(settings.sources), settings.path, dict(settings.httpapps),
            dict(settings.ttpapps))


class _StopServing(Exception):
    """SIGTERM reached the web process: it stops serving."""


def _on_sigterm(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM changes nothing
    raise _StopServing


def _tell(ready: Any, message: Any) -> bool:
    """Send the parent the start's outcome; False when it no longer listens."""
    try:
        ready.send(message)
        ready.close()
    except OSError:
        return False
    return True


def run_web_process(make_site: Callable[[Settings], Any], settings_state: tuple, sock: socket.socket,
                    ready: Any, stop: Any) -> None:
    """The web process: serve ``make_site(settings)`` on ``sock`` until ``stop`` (a pipe) ends
    or SIGTERM arrives. SIGINT is the parent's to handle (Ctrl-C reaches both)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _START_SIGNALS)  # SIGTERM ends a start quietly
    settings = Settings(*settings_state)
    try:
        os.nice(WEB_NICENESS)  # on a busy machine the meters' loop gets the CPU first
    except OSError:
        pass
    log_to_stderr(loggers=("txm", "waitress"))
    try:
        import waitress

        open_database(settings)
        app = make_site(settings)
        # A small output watermark: a big CSV download's thread waits for the client instead of
        # buffering megabytes ahead of it, so memory stays flat however long the download.
        proxy: dict[str, Any] = {}
        if settings.TRUSTED_PROXY:
            proxy = {"trusted_proxy": settings.TRUSTED_PROXY, "trusted_proxy_count": 1,
                     "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"}}
        stall = settings.WEB_STALL_SECONDS
        server = waitress.create_server(app, sockets=[sock], threads=WEB_THREADS, ident="txm",
                                        clear_untrusted_proxy_headers=True,
                                        outbuf_high_watermark=OUTPUT_WATERMARK, outbuf_overflow=OUTPUT_WATERMARK,
                                        cleanup_interval=max(1, min(30, int(stall / STALL_CHECKS))), **proxy)
        close_stalled_clients(server, stall)
    except TxmError as exc:
        _tell(ready, (exc.exit_code, str(exc)))
        return
    except Exception as exc:  # a bug: one line for the parent to report, the traceback in the log
        log.exception("the web interface cannot start")
        _tell(ready, (1, f"the web interface cannot start: {type(exc).__name__}: {exc}"))
        return
    thread = threading.Thread(target=server.run, name="txm-waitress", daemon=True)
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        if _tell(ready, "ready"):  # else the parent stopped waiting: it is stopping
            thread.start()
            while thread.is_alive() and not stop.poll(1.0):  # true once the parent closes its end
                pass
    except _StopServing:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Exit at once. Closing waitress first would pull its trigger from under requests still
    # being served (each then logs a traceback); the listening socket is the parent's to close,
    # and the kernel ends the connections and database sessions with the process.
    logging.shutdown()
    os._exit(0)
