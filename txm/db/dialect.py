"""The SQL that differs between SQLite, PostgreSQL and MySQL/MariaDB, for the queries txm writes
by hand (hot paths on plain DB-API cursors, where a model object per row would cost too much).

``kind, param, quote = Dialect.of(db)`` unpacks, and the methods write what differs.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, NamedTuple

import peewee as pw


class Dialect(NamedTuple):
    kind: str  # "sqlite", "postgresql" or "mysql"
    param: str  # the DB-API parameter marker
    quote: str  # the identifier quote

    @classmethod
    def of(cls, db: pw.Database) -> "Dialect":
        if isinstance(db, pw.SqliteDatabase):
            return cls("sqlite", "?", '"')
        if isinstance(db, pw.PostgresqlDatabase):
            return cls("postgresql", "%s", '"')
        return cls("mysql", "%s", "`")

    def ident(self, name: str) -> str:
        """A quoted column or table name."""
        return f"{self.quote}{name}{self.quote}"

    def stamp(self, value: dt.datetime) -> Any:
        """A timestamp as a query parameter: SQLite compares the stored text, the servers datetimes."""
        return str(value) if self.kind == "sqlite" else value

    @staticmethod
    def to_datetime(value: Any) -> dt.datetime:
        """A timestamp read back with a plain cursor (SQLite gives the stored text)."""
        return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
