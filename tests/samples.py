"""Samples stored for tests as a meter's upload stores them: through the TTP server's own insert
path (:class:`txm.db.samples.SampleStore`), committed. (``tests.webutil.store_samples`` inserts
rows directly instead.)"""

from __future__ import annotations

import datetime as dt

from txm.db import schema
from txm.db.samples import SampleStore, UnitRecord


def store_samples(database, code: str, samples, received: dt.datetime | None = None) -> None:
    """Store samples through the TTP server's own insert path, committed."""
    store = SampleStore(database)
    unit = store.units([code])[code]
    with database.atomic():
        store.insert_samples(unit, samples, received or schema.utcnow())


def add_samples(unit: schema.Unit, count: int, start: dt.datetime = dt.datetime(2026, 1, 1)) -> None:
    """Store ``count`` samples one second apart through the TTP server's own insert."""
    store = SampleStore(schema.database.obj)
    record = UnitRecord(unit.id, unit.code, unit.key, unit.channels, (), False)
    batch = 10_000
    for first in range(0, count, batch):
        with schema.database.atomic():
            store.insert_samples(record, [(start + dt.timedelta(seconds=i), [float(i)] * unit.channels)
                                          for i in range(first, min(count, first + batch))], schema.utcnow())
