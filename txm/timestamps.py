"""The one text form of a timestamp: ``YYYY-MM-DD HH:MM:SS[.ffffff]``.

TTP downloads, the CSV export, the web pages, the JSON API, the admin panel and the TTP client
write timestamps this way: zero-padded (year 999 is ``0999``), microseconds only when there are
some. It is also ``str(datetime)``, the text SQLite keeps (:mod:`txm.db.samples`). A low module:
it imports nothing of txm, so every layer may use it.
"""

from __future__ import annotations

import datetime as dt

#: How txm writes timestamps, for help texts and the web page.
TIMESTAMP_FORMAT = "YYYY-MM-DD HH:MM:SS[.ffffff]"


def format_timestamp(value: dt.datetime) -> str:
    """``2009-01-06 05:03:04``, or ``2009-01-06 05:03:04.100000`` when there are microseconds.

    A time zone, if the value has one, is not written (txm's timestamps are naive).
    """
    if value.tzinfo is not None:
        value = value.replace(tzinfo=None)
    return value.isoformat(" ")
