"""Copy a whole installation from one database to another (``txm migrate-db``).

Both ends are named either by a configuration file (its ``DATABASE_*`` settings) or by a URL:
``sqlite:///path/to/txm.db``, ``postgresql://user:password@host:port/name``,
``mysql://user:password@host:port/name``. Tables are created on the destination as needed, rows
are copied table by table in primary-key batches with their ids, and the row counts of both
ends are compared at the end. The destination must not hold data yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import unquote, urlsplit

import peewee as pw

from txm import config
from txm.db import schema
from txm.db.bulk import BATCH_SIZE
from txm.db.database import connect_database, create_tables, fix_sequences
from txm.errors import DatabaseError, InvalidValue, TxmError

_SCHEMES = {"sqlite": "sqlite3", "sqlite3": "sqlite3", "postgresql": "postgresql", "postgres": "postgresql",
            "mysql": "mysql", "mariadb": "mysql"}

#: Reports progress: (table name, rows copied so far in it, rows in it).
Progress = Callable[[str, int, int], None]


def settings_for(spec: str) -> config.Settings:
    """Settings naming the database of ``spec``: a URL or a configuration file."""
    if "://" not in spec:
        path = Path(spec)
        if not path.is_file():
            raise InvalidValue(f"{spec!r} is neither a database URL (sqlite:///file.db, "
                               f"postgresql://user@host/name, mysql://user@host/name) nor a configuration file")
        return config.read_settings(path)
    url = urlsplit(spec)
    engine = _SCHEMES.get(url.scheme.lower())
    if engine is None:
        raise InvalidValue(f"unknown database kind {url.scheme!r} in {spec!r}; use sqlite, postgresql or mysql")
    if engine == "sqlite3":
        name = unquote(url.path)
        if not name or name == "/":
            raise InvalidValue(f"{spec!r} names no file; write sqlite:///relative.db or sqlite:////abs/path.db")
        return config.defaults().replace(DATABASE_ENGINE="sqlite3", DATABASE_NAME=str(Path(name[1:]).absolute()))
    name = unquote(url.path.lstrip("/"))
    if not name:
        raise InvalidValue(f"{spec!r} names no database; add /NAME at the end")
    return config.defaults().replace(
        DATABASE_ENGINE=engine, DATABASE_NAME=name, DATABASE_USER=unquote(url.username or ""),
        DATABASE_PASSWORD=unquote(url.password or ""), DATABASE_HOST=url.hostname or "",
        DATABASE_PORT=url.port or 0)


@dataclass
class TableCount:
    table: str
    source: int
    destination: int


def count_rows(database: pw.Database) -> dict[str, int]:
    with database.bind_ctx(schema.MODELS):
        return {m._meta.table_name: m.select().count() for m in schema.MODELS
                if database.table_exists(m._meta.table_name)}


def migrate(source: config.Settings, destination: config.Settings, batch_size: int = BATCH_SIZE,
            progress: Optional[Progress] = None) -> list[TableCount]:
    """Copy every txm table from ``source`` to ``destination``; return the verified counts."""
    if source.database_label() == destination.database_label():
        raise InvalidValue("the source and the destination are the same database")
    src = connect_database(source, create=False)
    dst = connect_database(destination, create=True)
    try:
        with src.bind_ctx(schema.MODELS):
            if not src.table_exists(schema.User._meta.table_name):
                raise DatabaseError(f"the source ({source.database_label()}) has no txm tables")
        create_tables(dst)
        busy = {table: n for table, n in count_rows(dst).items() if n}
        if busy:
            raise TxmError(f"the destination ({destination.database_label()}) already holds data "
                           f"({', '.join(f'{t}: {n}' for t, n in sorted(busy.items()))}); "
                           f"migrate into an empty database")
        for model in schema.MODELS:
            _copy_table(model, src, dst, batch_size, progress)
        fix_sequences(dst)
        before, after = count_rows(src), count_rows(dst)
        counts = [TableCount(t, before.get(t, 0), after.get(t, 0)) for t in before]
        wrong = [c for c in counts if c.source != c.destination]
        if wrong:
            raise TxmError("row counts differ after copying: " + ", ".join(
                f"{c.table} {c.source} -> {c.destination}" for c in wrong))
        return counts
    finally:
        src.close()
        dst.close()


def _copy_table(model: type[pw.Model], src: pw.Database, dst: pw.Database, batch_size: int,
                progress: Optional[Progress]) -> None:
    table = model._meta.table_name
    fields = model._meta.sorted_fields
    pk = model._meta.primary_key
    with src.bind_ctx([model]):
        if not src.table_exists(table):
            return
        total = model.select().count()
    copied = 0
    last = None
    if progress:
        progress(table, 0, total)
    while True:
        with src.bind_ctx([model]):
            query = model.select(*fields).order_by(pk).limit(batch_size)
            if last is not None:
                query = query.where(pk > last)
            rows = list(query.tuples())
        if not rows:
            break
        with dst.bind_ctx([model]), dst.atomic():
            model.insert_many(rows, fields=fields).execute()
        last = rows[-1][fields.index(pk)]
        copied += len(rows)
        if progress:
            progress(table, copied, total)
