"""``txm serve``: one lifecycle object for the TTP server and the services beside it.

:class:`Server` goes through start, ready, serving, should-exit and a graceful stop:

* **start** (:meth:`Server.start`): everything that can fail for a reason a person must fix
  is tried *before* the database is touched, so a failed start never creates a database file
  nor alters one: TTP Apps are loaded, the TTP port is bound (not yet listening), each
  service prepares (binds its port, finds its apps). Then the database is created or
  brought up to date, the services start (the web interface's child process says it is
  ready), and only then does the TTP port listen;
* **ready** (:attr:`Server.ready`; ``READY=1`` to systemd when the loop takes its first pass):
  meters are answered at full speed from here; :attr:`Server.ttp_port` is the port really
  bound, also with ``DS_PORT`` 0;
* **serving**: the TTP loop runs in the thread that called :meth:`Server.serve`;
* **should-exit** (:meth:`Server.request_stop`, from any thread; SIGINT/SIGTERM when serving
  in the main thread, however often and in whatever order they reach txm and its web child):
  :attr:`Server.stopping` is set at once, so no service restarts a child from then on; a
  stop asked for during start-up ends the start quietly;
* **graceful stop**: the loop finishes its pass, pending commits are flushed, services stop
  in reverse order, and only then are the signal handlers given back.

Services beside the TTP loop
----------------------------
The web interface (in a child process), the email worker and the LoggerNet Data Export server
and client run beside the loop as services (:mod:`txm.services`); :meth:`Server._make_services`
is their one explicit list. The web process serves :func:`make_site`: the web interface's
pages and API with the admin panel and HTTP Apps mounted, composed here, the one place above
both :mod:`txm.web` and :mod:`txm.admin`.
"""

from __future__ import annotations

import logging
import resource
import signal
import threading
from typing import Any, Iterable

import bottle
import peewee as pw

from txm import admin, manage, net
from txm.alarms.email import EmailWorker
from txm.config import Settings
from txm.db.database import make_database
from txm.errors import ConfigError, DatabaseError, TxmError
from txm.loggernet.client import PullClient
from txm.loggernet.server import ExportServer
from txm.services import Service, ThreadService
from txm.systemd import Notifier
from txm.ttp.apps import app_verbs
from txm.ttp.handler import Handler
from txm.ttp.loop import Loop
from txm.ttp.verbs import BUILTIN_VERBS
from txm.web import app as web_app
from txm.web.httpapps import mount_apps
from txm.web.process import WebService

log = logging.getLogger("txm.serve")

#: File descriptors kept free beside the meter connections (database, logs, web server).
SPARE_FILES = 256


def raise_file_limit(wanted: int) -> int:
    """Raise the soft limit of open files toward the hard limit; return the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    ceiling = hard if hard != resource.RLIM_INFINITY else max(wanted, 1 << 20)
    target = min(ceiling, max(soft, wanted)) if soft != resource.RLIM_INFINITY else soft
    if soft != resource.RLIM_INFINITY and target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    if soft != resource.RLIM_INFINITY and soft < wanted - SPARE_FILES:
        log.warning("the open-files limit (%d) is below MAX_CONNECTIONS plus %d spare; raise the hard limit "
                    "(ulimit -Hn) to hold that many meters", soft, SPARE_FILES)
    return soft


class _StopRequested(Exception):
    """A stop was asked for while starting: the start ends quietly."""


class Server:
    """``txm serve`` as an object: see the module docstring for its life."""

    def __init__(self, settings: Settings, services: Iterable[Service] | None = None,
                 handle_signals: bool = True, module_services: bool = True):
        """``services`` start beside the loop in addition to txm's own (left out with
        ``module_services`` false: the TTP server alone, as its tests want)."""
        self.settings = settings
        self.handle_signals = handle_signals
        self.module_services = module_services
        self._extra_services = list(services or [])
        self.services: list[Service] = []  # started, in start order
        self._prepared: list[Service] = []  # prepared (holding a port), maybe not started
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.stopped = threading.Event()
        self.database_created = False
        self.admin_created = False
        self.database: pw.Database | None = None
        self.loop: Loop | None = None
        self.ttp_apps: list[str] = []
        self.notifier = Notifier()
        self._started = False
        self._previous_signals: dict[int, Any] = {}

    # --- start ----------------------------------------------------------------------------------

    @property
    def should_exit(self) -> bool:
        return self.stopping.is_set()

    @property
    def ttp_port(self) -> int:
        if self.loop is None:
            raise RuntimeError("the server is not started")
        return self.loop.port

    @property
    def ttp_address(self) -> str:
        return f"{self.settings.BIND_ADDRESS}:{self.ttp_port}"

    def start(self) -> None:
        """Load the apps, bind the ports, prepare the database, start the services, listen.

        Every failure is a :class:`TxmError` with a one-line reason; nothing is left running.
        A stop asked for meanwhile (a signal) ends the start early and quietly:
        :attr:`should_exit` is then true and :meth:`serve` returns at once.
        """
        self._install_signals()
        try:
            self._start()
        except _StopRequested:
            self._stop_all()
        except BaseException as exc:
            asked_to_stop = self.should_exit  # before _stop_all, which sets it
            self._stop_all()
            if asked_to_stop and isinstance(exc, TxmError):
                log.info("start-up ended by the stop request (%s)", exc)
                return
            self._restore_signals()
            raise

    def _install_signals(self) -> None:
        if self.handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous_signals[sig] = signal.signal(sig, self._on_signal)

    def _restore_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig, handler in self._previous_signals.items():
            signal.signal(sig, handler)
        self._previous_signals.clear()

    def _check_stop(self) -> None:
        if self.stopping.is_set():
            raise _StopRequested

    def _start(self) -> None:
        settings = self.settings
        raise_file_limit(settings.MAX_CONNECTIONS + SPARE_FILES)
        verbs = dict(BUILTIN_VERBS)
        for name, verb in app_verbs(settings).items():
            if name in verbs:
                raise ConfigError(f"TTP App {name!r} would replace the built-in verb {name!r}; rename the app")
            verbs[name] = verb
            self.ttp_apps.append(name)
        listener = net.listen(settings.BIND_ADDRESS, settings.DS_PORT, "TTP", start=False)
        # Not connected: the database is created or opened only once everything else is in place.
        self.database = make_database(settings)
        self.loop = Loop(settings, Handler(settings, self.database, verbs), listener,
                         heartbeat=self.notifier.heartbeat, heartbeat_interval=self.notifier.watchdog_interval)
        services = [*self._extra_services, *(self._make_services() if self.module_services else [])]
        for service in services:
            prepare = getattr(service, "prepare", None)
            if prepare is not None:
                prepare()
                self._prepared.append(service)  # stopped (its port closed) should a later step fail
        self._check_stop()
        try:
            result = manage.syncdb(settings, self.database)
        except pw.PeeweeException as exc:
            raise DatabaseError(f"cannot prepare the database ({settings.database_label()}): "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                                ) from None
        self.database_created = bool(result.created_tables)
        self.admin_created = result.created_admin
        self.database.close()  # the loop's thread opens its own connection
        for service in services:
            self._check_stop()
            service.start()
            self.services.append(service)
        self._check_stop()
        net.start_listening(listener)
        self._started = True
        self.ready.set()

    def _make_services(self) -> list[Service]:
        """txm's own services, in start order (they stop in reverse)."""
        settings, database = self.settings, self.database
        services: list[Service] = []
        if settings.EXPORT_ENABLED:
            services.append(ThreadService("dataexport", lambda: ExportServer(settings, database)))
        if settings.LOGGERNET_HOST:
            services.append(ThreadService("loggernet", lambda: PullClient(settings, database)))
        email = ThreadService("email", lambda: EmailWorker(settings, database), stop_timeout=5.0)
        email.prepare()  # checks the email settings before the database is touched
        assert self.loop is not None
        self.loop.handler.on_commit("alarm", email.worker.wake)
        services.append(email)
        services.append(WebService(settings, make_site, stopping=self.stopping))
        return services

    # --- serving and stopping ---------------------------------------------------------------------

    def serve(self) -> None:
        """Run the TTP loop in this thread until asked to stop; then stop everything."""
        if not self._started and not self.should_exit:
            self.start()
        try:
            if self._started and not self.should_exit:
                assert self.loop is not None
                self.notifier.ready(f"TTP on {self.ttp_address}")
                self.loop.run()
        finally:
            self._stop_all()
            self._restore_signals()
            self.stopped.set()
            log.info("stopped")

    def run(self) -> None:
        """Start and serve."""
        self.start()
        self.serve()

    def request_stop(self) -> None:
        """Ask the server to stop (any thread, or a signal handler)."""
        if not self.stopping.is_set():
            self.stopping.set()
            self.notifier.stopping()
        if self.loop is not None:
            self.loop.stop()

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stopping.is_set():
            log.info("received %s; already stopping", name)
        else:
            log.info("received %s; stopping", name)
        self.request_stop()

    def _stop_all(self) -> None:
        """Stop the loop (flushing its commits), then the services in reverse order. Idempotent."""
        self.stopping.set()
        loop, self._started = self.loop, False
        if loop is not None and not loop.closed:
            loop.close()
        started, self.services = self.services, []
        prepared, self._prepared = self._prepared, []
        for service in [*reversed(started), *(s for s in reversed(prepared) if s not in started)]:
            try:
                service.stop()
            except Exception:
                log.exception("stopping service %s failed", getattr(service, "name", service))


def make_site(settings: Settings) -> bottle.Bottle:
    """The whole web site of ``txm serve``: the web interface's pages and JSON API, the admin
    panel at ``/admin/`` and the HTTP Apps at their urls (the web process serves it)."""
    site = web_app.make_app(settings)
    site.mount("/admin/", admin.make_app(settings))

    @site.get("/admin", access="public")
    def admin_slash():
        bottle.redirect(bottle.request.script_name.rstrip("/") + "/admin/", 301)

    mount_apps(site, settings)
    return site


class ServerThread:
    """Run a :class:`Server` in a background thread (tests, embedding): a context manager.

    >>> with ServerThread(settings.replace(DS_PORT=0)) as server:    # doctest: +SKIP
    ...     TTPClient("127.0.0.1", server.ttp_port).request("TTP /dl/M1/last key")

    Start-up errors are raised from ``__enter__``; ``stop()`` waits for the graceful stop.
    """

    def __init__(self, settings: Settings, services: Iterable[Service] | None = None, timeout: float = 30.0,
                 module_services: bool = True):
        self.server = Server(settings, services, handle_signals=False, module_services=module_services)
        self.timeout = timeout
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    @property
    def ttp_port(self) -> int:
        return self.server.ttp_port

    def start(self) -> "ServerThread":
        self.server.start()  # in the caller's thread, so its errors surface here
        self._thread = threading.Thread(target=self._serve, name="txm-serve", daemon=True)
        self._thread.start()
        return self

    def _serve(self) -> None:
        try:
            self.server.serve()
        except BaseException as exc:  # kept for stop() to re-raise
            self._error = exc

    def stop(self) -> None:
        self.server.request_stop()
        if self._thread is not None:
            self._thread.join(self.timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the server did not stop within {self.timeout} s")
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
