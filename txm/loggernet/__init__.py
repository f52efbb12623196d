"""LoggerNet Data Export in both directions (docs/export.md).

* :mod:`txm.loggernet.records` -- the two record formats and the acknowledgement;
* :mod:`txm.loggernet.server` -- txm as the Data Export server (``[dataexport]``);
* :mod:`txm.loggernet.client` -- txm as the custom client (``[loggernet]``, ``txm loggernet-pull``).

``txm serve`` runs the server when ``EXPORT_ENABLED`` is on and the client when
``LOGGERNET_HOST`` is set, each in a thread beside the TTP loop (a :class:`txm.services.ThreadService` each).
"""
