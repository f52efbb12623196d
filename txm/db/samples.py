"""The TTP server's hot-path SQL: units by code, many samples in one statement, the newest sample
(:func:`newest_sample`, the one query for it, which the pages, the API and ``txm unit show`` use too).

Plain DB-API calls on peewee's connection with precompiled statements: no model object per
sample. Duplicates are decided by the ``(unit, timestamp)`` unique index in the database, so
the answer stays right when several txm nodes share one PostgreSQL or MariaDB database:

* SQLite and PostgreSQL: ``INSERT ... ON CONFLICT DO NOTHING RETURNING timestamp``;
  the samples not returned are the duplicates.
* MariaDB/MySQL: ``INSERT IGNORE`` of all rows inside a savepoint; when fewer rows went in than
  were sent, that is rolled back and the rows go in one by one, each ``INSERT IGNORE`` telling
  by its row count whether it was a duplicate.
"""

from __future__ import annotations

import datetime as dt
import json
import operator
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any, Iterable, NamedTuple, Sequence

import peewee as pw

from txm.db import schema
from txm.db.dialect import Dialect
from txm.db.schema import CHANNEL_COLUMNS
from txm.timestamps import format_timestamp

#: Most rows per INSERT statement; keeps under every engine's bound-parameter limit.
ROWS_PER_STATEMENT = 900
#: Most unit codes per lookup query.
CODES_PER_QUERY = 500
#: Most units kept between passes (SQLite); the cache starts afresh beyond it.
UNIT_CACHE_SIZE = 100_000

# SQLite keeps a timestamp as text: str(datetime), txm's one form (txm.timestamps), zero-padded
# and without microseconds of zero. Meters mostly send exactly that, and such texts are stored as
# sent. They are told by their shape, all of an upload's at once in C: every ASCII digit made 0,
# one text a line (the TTP parser also reads other digits, and years of 1 to 3 digits).
_DIGITS_TO_0 = bytes.maketrans(b"123456789", b"000000000")
_STORED_SHAPES = (b"0000-00-00 00:00:00\n", b"0000-00-00 00:00:00.000000\n")


@dataclass(frozen=True, slots=True)
class UnitRecord:
    """What the TTP server needs of a unit, read fresh for every pass of the loop."""

    id: int
    code: str
    key: str
    channels: int
    labels: tuple[str, ...]
    show_labels: bool

    def channel_labels(self) -> list[str]:
        """A label for every channel: the configured one, else ``ch<N>``."""
        labels = self.labels
        return [(labels[i] if i < len(labels) and labels[i] else f"ch{i + 1}") for i in range(self.channels)]


class StoredSample(NamedTuple):
    """A stored sample as :meth:`SampleStore.newest` reads it (a named tuple: made on every TTP
    ``dl``, where it costs less than a frozen dataclass)."""

    id: int
    timestamp: dt.datetime
    values: tuple[float | None, ...]  # every channel of the unit, None where it has no value
    received_as_read: Any  # as the driver gave it; see received

    @property
    def received(self) -> dt.datetime:
        """The server's time (naive UTC) the sample arrived. Converted when asked, not when read:
        the TTP ``dl`` verb, which reads the newest sample on the hot path, never asks."""
        return Dialect.to_datetime(self.received_as_read)


class SampleStore:
    """Backend-aware statements for one database connection (used from one thread)."""

    def __init__(self, database: pw.Database):
        self.db = database
        self.dialect = Dialect.of(database)
        self.kind = self.dialect.kind  # read on every upload: one attribute, not two
        self._insert_sql: dict[tuple[int, int, str], str] = {}
        self._newest_sql: dict[int, str] = {}
        self._units_sql: dict[int, str] = {}
        self._unit_cache: dict[str, UnitRecord] = {}
        self._data_version: int | None = None
        self._received: tuple[dt.datetime | None, Any] = (None, None)  # the pass's, converted once

    # --- units ----------------------------------------------------------------------------------

    def units_for_pass(self, codes: Iterable[str]) -> dict[str, UnitRecord]:
        """The units with these codes as they are now; call inside the pass's transaction.

        SQLite: units stay cached while ``PRAGMA data_version`` says no other connection has
        committed anything (an admin's change to a code or key is another connection's commit),
        so a busy server does not re-read them on every pass. Other engines: read every pass.
        """
        if self.kind != "sqlite":
            return self.units(codes)
        codes = list(codes)
        cursor = self.db.cursor()
        cursor.execute("PRAGMA data_version")
        version = cursor.fetchone()[0]
        if version != self._data_version:
            self._data_version = version
            self._unit_cache = {}
        cache = self._unit_cache
        missing = [code for code in codes if code not in cache]
        if missing:
            if len(cache) + len(missing) > UNIT_CACHE_SIZE:
                self._unit_cache = cache = {code: cache[code] for code in codes if code in cache}
            cache.update(self.units(missing))
        return cache

    def forget_units(self) -> None:
        """Drop cached units (after a rollback or a reconnection)."""
        self._unit_cache = {}
        self._data_version = None

    def units(self, codes: Iterable[str]) -> dict[str, UnitRecord]:
        """The units with these codes, keyed by their exact code."""
        found: dict[str, UnitRecord] = {}
        codes = list(codes)
        cursor = self.db.cursor()
        for start in range(0, len(codes), CODES_PER_QUERY):
            chunk = codes[start:start + CODES_PER_QUERY]
            sql = self._units_sql.get(len(chunk))
            if sql is None:
                d = self.dialect
                sql = (f"SELECT {d.idents(['id', 'code', 'key', 'channels', 'labels', 'show_labels'])} "
                       f"FROM {d.ident('unit')} WHERE {d.ident('code')} IN ({d.markers(len(chunk))})")
                self._units_sql[len(chunk)] = sql
            cursor.execute(sql, chunk)
            for uid, code, key, channels, labels, show in cursor.fetchall():
                try:
                    label_list = tuple(str(x) for x in json.loads(labels or "[]"))
                except (ValueError, TypeError):
                    label_list = ()
                found[code] = UnitRecord(uid, code, key, channels, label_list, bool(show))
        return found

    # --- uploads --------------------------------------------------------------------------------

    def _insert(self, channels: int, rows: int, returning: str = "timestamp") -> str:
        sql = self._insert_sql.get((channels, rows, returning))
        if sql is None:
            d = self.dialect
            cols = ["unit_id", "timestamp", "received", *CHANNEL_COLUMNS[:channels]]
            col_sql = d.idents(cols)
            row = f"({d.markers(len(cols))})"
            values = ", ".join([row] * rows)
            if self.kind == "mysql":
                sql = f"INSERT IGNORE INTO {d.ident('sample')} ({col_sql}) VALUES {values}"
            else:
                sql = (f"INSERT INTO {d.ident('sample')} ({col_sql}) VALUES {values} "
                       f"ON CONFLICT ({d.idents(['unit_id', 'timestamp'])}) DO NOTHING RETURNING {d.ident(returning)}")
            if len(self._insert_sql) < 4096:
                self._insert_sql[(channels, rows, returning)] = sql
        return sql

    def db_timestamps(self, timestamps: Sequence[dt.datetime], sent: Sequence[str] | None = None) -> Sequence[Any]:
        """The timestamps as the driver takes them: SQLite keeps the one text form, the others
        take datetimes. ``sent``, the texts they were read from (an upload's, as meters wrote
        them), saves formatting them when every one already is the text SQLite keeps."""
        if self.kind != "sqlite":
            return timestamps
        if sent is not None:
            lines = ("\n".join(sent) + "\n").encode()
            shape = lines.translate(_DIGITS_TO_0)
            count = len(sent)
            if shape == _STORED_SHAPES[0] * count or (shape == _STORED_SHAPES[1] * count and b".000000\n" not in lines):
                return sent
        return list(map(format_timestamp, timestamps))

    def _received_value(self, received: dt.datetime) -> Any:
        """The pass's time as the driver takes it, converted once per pass."""
        if self._received[0] is not received:
            self._received = (received, self.dialect.stamp(received))
        return self._received[1]

    def insert_samples(self, unit: UnitRecord, samples: Sequence[tuple[dt.datetime, Sequence[float]]],
                       received: dt.datetime) -> list[bool]:
        """Insert samples whose timestamps differ from each other; return, per sample, whether it
        went in (False: the unit already has a sample with that timestamp)."""
        return self.insert_columns(unit, [timestamp for timestamp, _ in samples],
                                   [tuple(values) for _, values in samples], received)

    def insert_columns(self, unit: UnitRecord, timestamps: Sequence[dt.datetime],
                       values: Sequence[tuple[float, ...]], received: dt.datetime,
                       sent: Sequence[str] | None = None) -> list[bool]:
        """:meth:`insert_samples` for samples given as columns (the upload verb's hot path);
        ``sent`` as :meth:`db_timestamps` takes it."""
        received_value = self._received_value(received)
        stamps = self.db_timestamps(timestamps, sent)
        cursor = self.db.cursor()
        if len(stamps) <= ROWS_PER_STATEMENT or self.kind != "sqlite":
            return self._insert_chunks(cursor, unit, stamps, values, received_value)
        # Several statements: all of them or none (the caller's savepoint covers other engines).
        cursor.execute("SAVEPOINT txm_samples")
        try:
            result = self._insert_chunks(cursor, unit, stamps, values, received_value)
        except BaseException:
            cursor.execute("ROLLBACK TO SAVEPOINT txm_samples")
            cursor.execute("RELEASE SAVEPOINT txm_samples")
            raise
        cursor.execute("RELEASE SAVEPOINT txm_samples")
        return result

    def _insert_chunks(self, cursor, unit: UnitRecord, stamps: Sequence[Any], values: Sequence[tuple[float, ...]],
                       received_value: Any) -> list[bool]:
        """Insert the rows; ``stamps`` are the timestamps as the driver takes them."""
        inserted: list[bool] = []
        uid = unit.id
        total = len(stamps)
        for start in range(0, total, ROWS_PER_STATEMENT):
            if total > ROWS_PER_STATEMENT:
                chunk = stamps[start:start + ROWS_PER_STATEMENT]
                chunk_values = values[start:start + ROWS_PER_STATEMENT]
            else:
                chunk, chunk_values = stamps, values
            rows = len(chunk)
            if rows == 1:
                params = [uid, chunk[0], received_value, *chunk_values[0]]
            else:  # (unit, timestamp, received) + values, row after row
                params = list(chain.from_iterable(map(
                    operator.add, zip(repeat(uid, rows), chunk, repeat(received_value, rows)), chunk_values)))
            if self.kind == "mysql":
                inserted.extend(self._insert_mysql(cursor, unit.channels, rows, params))
                continue
            cursor.execute(self._insert(unit.channels, rows), params)
            returned = cursor.fetchall()
            if len(returned) == rows:
                inserted.extend([True] * rows)
            else:
                went_in = {row[0] for row in returned}
                inserted.extend(stamp in went_in for stamp in chunk)
        return inserted

    def insert_one_each(self, samples: Sequence[tuple[UnitRecord, dt.datetime, str, tuple[float, ...]]],
                        received: dt.datetime) -> list[bool]:
        """Insert one sample for each of several *different* units, in as few statements as the
        parameter limit allows; return, per sample, whether it went in (False: a duplicate).

        Each sample is ``(unit, timestamp, sent, values)``, ``sent`` being the text the timestamp
        was read from (see :meth:`db_timestamps`). Units with fewer channels leave the others
        NULL, as a single upload does.
        """
        received_value = self._received_value(received)
        cursor = self.db.cursor()
        inserted: list[bool] = []
        for start in range(0, len(samples), ROWS_PER_STATEMENT):
            chunk = samples[start:start + ROWS_PER_STATEMENT]
            channels = max(unit.channels for unit, _, _, _ in chunk)
            params: list[Any] = []
            stamps = self.db_timestamps([sample[1] for sample in chunk], [sample[2] for sample in chunk])
            for (unit, _, _, values), stamp in zip(chunk, stamps):
                params += (unit.id, stamp, received_value, *values)
                if unit.channels < channels:
                    params += (None,) * (channels - unit.channels)
            rows = len(chunk)
            if self.kind == "mysql":
                inserted.extend(self._insert_mysql(cursor, channels, rows, params))
                continue
            cursor.execute(self._insert(channels, rows, "unit_id"), params)
            returned = cursor.fetchall()
            if len(returned) == rows:
                inserted.extend([True] * rows)
            else:  # the units differ, so the unit tells which rows went in
                if len({unit.id for unit, _, _, _ in chunk}) != rows:
                    raise ValueError("insert_one_each needs samples of different units")
                went_in = {row[0] for row in returned}
                inserted.extend(unit.id in went_in for unit, _, _, _ in chunk)
        return inserted

    def _insert_mysql(self, cursor, channels: int, rows: int, params: list[Any]) -> list[bool]:
        cursor.execute("SAVEPOINT txm_upload")
        cursor.execute(self._insert(channels, rows), params)
        if cursor.rowcount == rows:
            cursor.execute("RELEASE SAVEPOINT txm_upload")
            return [True] * rows
        # Some were duplicates: redo row by row to learn which, each row's count answering for it.
        cursor.execute("ROLLBACK TO SAVEPOINT txm_upload")
        cursor.execute("RELEASE SAVEPOINT txm_upload")
        sql = self._insert(channels, 1)
        width = 3 + channels
        result = []
        for i in range(rows):
            cursor.execute(sql, params[i * width:(i + 1) * width])
            result.append(cursor.rowcount == 1)
        return result

    # --- downloads ------------------------------------------------------------------------------

    def newest(self, unit: UnitRecord | schema.Unit) -> StoredSample | None:
        """The unit's sample with the newest timestamp, or None: one seek at the end of the unit's
        stretch of the ``(unit_id, timestamp)`` index. The statement is kept per channel count."""
        sql = self._newest_sql.get(unit.channels)
        if sql is None:
            d = self.dialect
            columns = d.idents(["id", "timestamp", "received", *CHANNEL_COLUMNS[:unit.channels]])
            sql = (f"SELECT {columns} FROM {d.ident('sample')} WHERE {d.ident('unit_id')} = {d.param} "
                   f"ORDER BY {d.ident('timestamp')} DESC LIMIT 1")
            self._newest_sql[unit.channels] = sql
        cursor = self.db.cursor()
        cursor.execute(sql, (unit.id,))
        row = cursor.fetchone()
        if row is None:
            return None
        return StoredSample(row[0], Dialect.to_datetime(row[1]), tuple(row[3:]), row[2])


def newest_sample(unit: UnitRecord | schema.Unit, db: pw.Database | None = None) -> StoredSample | None:
    """The unit's sample with the newest timestamp, or None, from the bound database (or ``db``):
    :meth:`SampleStore.newest`, for the date presets, the pages, the API and ``txm unit show``."""
    return SampleStore(db if db is not None else schema.database.obj).newest(unit)
