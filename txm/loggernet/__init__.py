"""LoggerNet Data Export in both directions (docs/export.md).

* :mod:`txm.loggernet.records` -- the two record formats and the acknowledgement;
* :mod:`txm.loggernet.server` -- txm as the Data Export server (``[dataexport]``);
* :mod:`txm.loggernet.client` -- txm as the custom client (``[loggernet]``, ``txm loggernet-pull``).

``txm serve`` runs the server when ``EXPORT_ENABLED`` is on and the client when
``LOGGERNET_HOST`` is set, each in a thread beside the TTP loop (:func:`make_services`).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from txm.config import Settings


class LoopService:
    """A server or client object with ``run(stop_event)``, made at start and run in a thread."""

    def __init__(self, name: str, make: Callable[[], Any]):
        self.name = name
        self.description = ""
        self.worker: Any = None
        self._make = make
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def prepare(self) -> None:
        """Make the worker: it binds its port and checks its settings, so that their errors
        stop ``txm serve`` before it touches the database."""
        if self.worker is None:
            self.worker = self._make()

    def start(self) -> None:
        self.prepare()
        self.description = self.worker.description
        self._thread = threading.Thread(target=self._run, name=f"txm-{self.name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import logging

        try:
            self.worker.run(self._stop)
        except Exception:
            logging.getLogger("txm.loggernet").exception("service %s failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)
        elif self.worker is not None and hasattr(self.worker, "close"):
            self.worker.close()  # prepared, never run: its port is closed here


def make_services(settings: Settings, server: Any = None) -> list[LoopService]:
    """The Data Export server and/or client that the settings switch on."""
    from txm import db as models

    def database():  # txm serve's own (made before it is opened), or the models' when alone
        own = getattr(server, "database", None)
        return own if own is not None else models.database.obj

    services = []
    if settings.EXPORT_ENABLED:
        from txm.loggernet.server import ExportServer

        services.append(LoopService("dataexport", lambda: ExportServer(settings, database())))
    if settings.LOGGERNET_HOST:
        from txm.loggernet.client import PullClient

        services.append(LoopService("loggernet", lambda: PullClient(settings, database())))
    return services
