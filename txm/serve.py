"""``txm serve``: one lifecycle object for the TTP server and the services beside it.

:class:`Server` goes through start (database ready, port bound, services started), ready
(:attr:`Server.ready` is set; :attr:`Server.ttp_port` is the port really bound, also with
``DS_PORT`` 0), serving (the TTP loop runs in the thread that called :meth:`Server.serve`),
should-exit (:meth:`Server.request_stop`, from any thread; SIGINT/SIGTERM when serving in the
main thread) and a graceful stop: the loop finishes its pass, pending commits are flushed,
services stop in reverse order.

Services beside the TTP loop
----------------------------
The web interface, the email worker and the LoggerNet export server/client run beside the
loop as *services*: objects with

* ``name`` -- a short name for messages (``"web"``);
* ``start()`` -- start running in the background (a thread or a child process) and return
  once it is ready; raise :class:`txm.errors.TxmError` with a one-line reason if it cannot;
* ``stop()`` -- stop and return once stopped; called once, also after a failed start of a
  later service, and must not raise;
* optionally ``description`` -- a line for the start-up message (``"web interface on
  http://0.0.0.0:8080/"``), read after ``start()``.

A module offers services through a factory ``make_services(settings, server)`` returning a list
(empty when switched off in the settings), and is listed, one line each, in
:data:`SERVICE_MODULES`. :class:`ThreadService` and :class:`ProcessService` wrap a plain
function; a service that must never stall the meters (a web server rendering big graphs) can
be a :class:`ProcessService`, whose child opens its own database connection.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import resource
import signal
import threading
from typing import Any, Callable, Iterable, Protocol

import peewee as pw

from txm import manage
from txm.config import Settings
from txm.errors import ConfigError, DatabaseError, TxmError
from txm.ttp.apps import app_verbs
from txm.ttp.handler import Handler, builtin_verbs
from txm.ttp.loop import Loop, make_listener

log = logging.getLogger("txm.serve")

#: Modules whose ``make_services(settings, server)`` add services to ``txm serve``; one per line.
#: A module that is not part of this installation is left out.
SERVICE_MODULES: tuple[str, ...] = (
    "txm.web",
)

#: File descriptors kept free beside the meter connections (database, logs, web server).
SPARE_FILES = 256


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class ThreadService:
    """A service running ``target(stop_event)`` in a daemon thread until the event is set."""

    def __init__(self, name: str, target: Callable[[threading.Event], Any], description: str = "",
                 stop_timeout: float = 10.0):
        self.name = name
        self.description = description
        self._target = target
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_timeout = stop_timeout

    def _run(self) -> None:
        try:
            self._target(self._stop_event)
        except Exception:
            log.exception("service %s failed", self.name)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"txm-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(self._stop_timeout)
            if self._thread.is_alive():
                log.warning("service %s did not stop within %.0f s", self.name, self._stop_timeout)


class ProcessService:
    """A service running ``target(settings_path, stop_event, *args)`` in a child process.

    The child is started with the ``spawn`` method (no inherited database connection or
    threads); ``target`` must be importable (a module-level function). ``stop()`` sets the
    event, waits, and terminates the child if it does not finish in time.
    """

    def __init__(self, name: str, target: Callable[..., Any], args: Iterable[Any] = (), description: str = "",
                 stop_timeout: float = 10.0):
        self.name = name
        self.description = description
        self._ctx = multiprocessing.get_context("spawn")
        self._stop_event = self._ctx.Event()
        self._process = self._ctx.Process(target=target, args=(self._stop_event, *args), name=f"txm-{name}",
                                          daemon=True)
        self._stop_timeout = stop_timeout

    @property
    def process(self):
        return self._process

    def start(self) -> None:
        self._process.start()

    def stop(self) -> None:
        self._stop_event.set()
        if self._process.pid is None:
            return
        self._process.join(self._stop_timeout)
        if self._process.is_alive():
            log.warning("service %s did not stop within %.0f s; terminating it", self.name, self._stop_timeout)
            self._process.terminate()
            self._process.join(5)


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


class Server:
    """``txm serve`` as an object: see the module docstring for its life."""

    def __init__(self, settings: Settings, services: Iterable[Service] | None = None,
                 handle_signals: bool = True, module_services: bool = True):
        """``services`` start beside the loop in addition to those of :data:`SERVICE_MODULES`
        (left out with ``module_services`` false: the TTP server alone, as its tests want)."""
        self.settings = settings
        self.handle_signals = handle_signals
        self.module_services = module_services
        self._extra_services = list(services or [])
        self.services: list[Service] = []
        self.ready = threading.Event()
        self.stopped = threading.Event()
        self.database_created = False
        self.admin_created = False
        self.loop: Loop | None = None
        self._should_exit = False
        self._started = False
        self._previous_signals: dict[int, Any] = {}

    # --- start ----------------------------------------------------------------------------------

    @property
    def should_exit(self) -> bool:
        return self._should_exit

    @property
    def ttp_port(self) -> int:
        if self.loop is None:
            raise RuntimeError("the server is not started")
        return self.loop.port

    @property
    def ttp_address(self) -> str:
        return f"{self.settings.BIND_ADDRESS}:{self.ttp_port}"

    def start(self) -> None:
        """Prepare the database, bind the TTP port, load the verbs, start the services.

        Every failure is a :class:`TxmError` with a one-line reason; nothing is left running.
        """
        self._install_signals()
        try:
            self._start()
        except BaseException:
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

    def _start(self) -> None:
        settings = self.settings
        raise_file_limit(settings.MAX_CONNECTIONS + SPARE_FILES)
        try:
            result = manage.syncdb(settings)
        except pw.PeeweeException as exc:
            raise DatabaseError(f"cannot prepare the database ({settings.database_label()}): "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}"
                                ) from None
        self.database_created = bool(result.created_tables)
        self.admin_created = result.created_admin
        database = result.database
        database.close()  # the loop's thread opens its own connection
        verbs = builtin_verbs()
        for name, verb in app_verbs(settings).items():
            if name in verbs:
                raise ConfigError(f"TTP App {name!r} would replace the built-in verb {name!r}; rename the app")
            verbs[name] = verb
        try:
            listener = make_listener(settings.BIND_ADDRESS, settings.DS_PORT)
        except OSError as exc:
            raise TxmError(f"cannot listen for TTP on {settings.BIND_ADDRESS}:{settings.DS_PORT}: "
                           f"{exc.strerror or exc}") from None
        self.loop = Loop(settings, Handler(settings, database, verbs), listener)
        try:
            module_services = self._module_services() if self.module_services else []
            for service in [*self._extra_services, *module_services]:
                service.start()
                self.services.append(service)
        except BaseException:
            self._stop_services()
            self.loop._shutdown()
            raise
        self._started = True
        self.ready.set()

    def _module_services(self) -> list[Service]:
        found: list[Service] = []
        for name in SERVICE_MODULES:
            try:
                module = importlib.import_module(name)
            except ModuleNotFoundError as exc:
                if exc.name == name:
                    continue
                raise
            found.extend(module.make_services(self.settings, self) or [])
        return found

    # --- serving and stopping ---------------------------------------------------------------------

    def serve(self) -> None:
        """Run the TTP loop in this thread until asked to stop; then stop everything."""
        if not self._started:
            self.start()
        assert self.loop is not None
        try:
            if not self._should_exit:
                self.loop.run()
            else:
                self.loop.handler.close()
                self.loop._shutdown()
        finally:
            self._restore_signals()
            self._stop_services()
            self.stopped.set()
            log.info("stopped")

    def run(self) -> None:
        """Start and serve."""
        self.start()
        self.serve()

    def request_stop(self) -> None:
        """Ask the server to stop (any thread)."""
        self._should_exit = True
        if self.loop is not None:
            self.loop.stop()

    def _on_signal(self, signum: int, frame: Any) -> None:
        log.info("received %s; stopping", signal.Signals(signum).name)
        self.request_stop()

    def _stop_services(self) -> None:
        while self.services:
            service = self.services.pop()
            try:
                service.stop()
            except Exception:
                log.exception("stopping service %s failed", getattr(service, "name", service))


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
