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

    def start(self) -> None:
        self.worker = self._make()  # binds the port, checks settings: errors stop txm serve here
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


def make_services(settings: Settings, server: Any = None) -> list[LoopService]:
    """The Data Export server and/or client that the settings switch on."""
    from txm import db as models

    services = []
    if settings.EXPORT_ENABLED:
        from txm.loggernet.server import ExportServer

        services.append(LoopService("dataexport", lambda: ExportServer(settings, models.database.obj)))
    if settings.LOGGERNET_HOST:
        from txm.loggernet.client import PullClient

        services.append(LoopService("loggernet", lambda: PullClient(settings, models.database.obj)))
    return services
