"""Services: what runs beside the TTP loop in ``txm serve`` (see :mod:`txm.serve` for their life).

A service is an object with

* ``name`` -- a short name for messages (``"web"``);
* optionally ``prepare()`` -- bind ports, load apps, check settings; called before the
  database is created or opened; raise :class:`txm.errors.TxmError` with a one-line reason;
* ``start()`` -- start running in the background (a thread or a child process) and return
  once it is ready; raise :class:`txm.errors.TxmError` with a one-line reason if it cannot;
* ``stop()`` -- stop and return once stopped; called once, also for a service that was only
  prepared, and must not raise;
* optionally ``description`` -- lines for the start-up message, read after ``start()``.

Two kinds cover txm's own: :class:`ThreadService` runs a *worker* in a thread (the email
worker, the LoggerNet Data Export server and client), and
:class:`txm.web.process.WebService` runs the web interface in a child process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Protocol

log = logging.getLogger("txm.serve")


class Service(Protocol):
    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Worker(Protocol):
    """What a :class:`ThreadService` runs: ``run(stop)`` works until the event is set.

    Optionally ``description`` (the start-up line), ``wake()`` (called on stop, for a worker
    that sleeps on an event of its own) and ``close()`` (called on stop when ``run`` never
    ran: a worker that bound a port when made closes it there).
    """

    def run(self, stop: threading.Event) -> None: ...


class ThreadService:
    """A worker made by ``make()`` when prepared and run in a daemon thread until stopped.

    Making the worker in :meth:`prepare` lets it bind its port and check its settings before
    ``txm serve`` touches the database, so their errors stop it there. A worker that raises is
    logged; the rest of txm goes on.
    """

    def __init__(self, name: str, make: Callable[[], Worker], stop_timeout: float = 10.0):
        self.name = name
        self.description = ""
        self.worker: Any = None
        self._make = make
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._stop_timeout = stop_timeout

    def prepare(self) -> None:
        if self.worker is None:
            self.worker = self._make()

    def start(self) -> None:
        self.prepare()
        self.description = getattr(self.worker, "description", "")
        self._thread = threading.Thread(target=self._run, name=f"txm-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self._stop)
        except Exception:
            log.exception("service %s failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        wake = getattr(self.worker, "wake", None)
        if wake is not None:
            wake()
        if self._thread is not None:
            # A worker in the middle of a network exchange (an SMTP session) is left to finish
            # on its own: the thread is a daemon, and the work it claimed is claimed again later.
            self._thread.join(self._stop_timeout)
            if self._thread.is_alive():
                log.warning("service %s did not stop within %.0f s", self.name, self._stop_timeout)
        elif self.worker is not None and hasattr(self.worker, "close"):
            self.worker.close()  # prepared, never run: its port is closed here
