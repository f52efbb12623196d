"""The SQL that differs between SQLite, PostgreSQL and MySQL/MariaDB, for the queries txm writes
by hand (hot paths on plain DB-API cursors, where a model object per row would cost too much).

``kind, param, quote = Dialect.of(db)`` unpacks, and the methods write what differs. Every
module that writes SQL by hand takes its dialect from here.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Iterable, NamedTuple

import peewee as pw


class Dialect(NamedTuple):
    kind: str  # "sqlite", "postgresql" or "mysql"
    param: str  # the DB-API parameter marker
    quote: str  # the identifier quote

    @classmethod
    def of(cls, db: pw.Database) -> "Dialect":
        """The dialect of a peewee database (the database itself, not a proxy to it)."""
        if isinstance(db, pw.SqliteDatabase):
            return SQLITE
        if isinstance(db, pw.PostgresqlDatabase):
            return POSTGRESQL
        return MYSQL

    def ident(self, name: str) -> str:
        """A quoted column or table name."""
        return f"{self.quote}{name}{self.quote}"

    def idents(self, names: Iterable[str]) -> str:
        """Quoted column names, separated by commas."""
        return ", ".join([f"{self.quote}{name}{self.quote}" for name in names])

    def markers(self, count: int) -> str:
        """``count`` parameter markers, separated by commas (for ``IN (...)`` and ``VALUES (...)``)."""
        return ", ".join([self.param] * count)

    def stamp(self, value: dt.datetime) -> Any:
        """A timestamp as a query parameter: SQLite compares the stored text, the servers datetimes."""
        return str(value) if self.kind == "sqlite" else value

    @staticmethod
    def to_datetime(value: Any) -> dt.datetime:
        """A timestamp read back with a plain cursor (SQLite gives the stored text)."""
        return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))

    def samples_where(self, unit_id: int, start: dt.datetime | None,
                      end: dt.datetime | None) -> tuple[str, list[Any]]:
        """The condition for a unit's samples with ``start <= timestamp < end`` (None leaves that
        side open), and its parameters: a range on the ``(unit_id, timestamp)`` index."""
        sql, params = [f"{self.ident('unit_id')} = {self.param}"], [unit_id]
        if start is not None:
            sql.append(f"{self.ident('timestamp')} >= {self.param}")
            params.append(self.stamp(start))
        if end is not None:
            sql.append(f"{self.ident('timestamp')} < {self.param}")
            params.append(self.stamp(end))
        return " AND ".join(sql), params

    def micros_since(self, origin_marker: str) -> str:
        """SQL for the whole microseconds from a parameter (a timestamp; on SQLite, the whole
        microseconds since 1970) to the sample's timestamp."""
        ts = self.ident("timestamp")
        if self.kind == "sqlite":  # exact integers from the stored text: julianday() and strftime() round
            return (f"(CAST(strftime('%s', substr({ts}, 1, 19)) AS INTEGER) * 1000000"
                    f" + CAST(substr({ts}, 21) AS INTEGER)"
                    f" - {origin_marker})")
        if self.kind == "postgresql":
            return f"(EXTRACT(EPOCH FROM ({ts} - CAST({origin_marker} AS TIMESTAMP))) * 1000000)"
        return f"TIMESTAMPDIFF(MICROSECOND, {origin_marker}, {ts})"


SQLITE = Dialect("sqlite", "?", '"')
POSTGRESQL = Dialect("postgresql", "%s", '"')
MYSQL = Dialect("mysql", "%s", "`")
