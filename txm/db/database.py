"""Opening the database the settings name: making, connecting, creating tables, closing.

:func:`open_database` binds the models of :mod:`txm.db.schema` to the opened database.
"""

from __future__ import annotations

from typing import Any, Iterable

import peewee as pw

from txm.config import Settings
from txm.db.dialect import Dialect
from txm.db.schema import MODELS, User, database
from txm.errors import DatabaseError

_DRIVERS = {"postgresql": ("psycopg2", "postgres"), "mysql": ("pymysql", "mysql")}


def make_database(settings: Settings) -> pw.Database:
    """A peewee database for the settings, not yet connected."""
    engine = settings.DATABASE_ENGINE
    if engine == "sqlite3":
        return pw.SqliteDatabase(
            str(settings.sqlite_path()),
            pragmas={"journal_mode": "wal", "foreign_keys": 1, "synchronous": "full", "busy_timeout": 10000},
            timeout=10,
        )
    module, extra = _DRIVERS[engine]
    try:
        __import__(module)
    except ImportError:
        raise DatabaseError(
            f"DATABASE_ENGINE is {engine} but its driver ({module}) is not installed; "
            f"install it with: pip install 'txm[{extra}]'") from None
    params: dict[str, Any] = {}
    for key, param in (("DATABASE_USER", "user"), ("DATABASE_PASSWORD", "password"),
                       ("DATABASE_HOST", "host"), ("DATABASE_PORT", "port")):
        if settings[key]:
            params[param] = settings[key]
    name = settings.DATABASE_NAME or "txm"
    if engine == "postgresql":
        return pw.PostgresqlDatabase(name, **params)
    # DATETIME(6) keeps the microseconds meters send; utf8mb4 keeps every label.
    return pw.MySQLDatabase(name, charset="utf8mb4", field_types={"DATETIME": "DATETIME(6)"}, **params)


def connect_database(settings: Settings, create: bool = False, db: pw.Database | None = None) -> pw.Database:
    """Connect to the database the settings name (``db``: that database object of
    :func:`make_database`), without binding the models; with ``create``, a missing SQLite file
    (and its folder) is made. :class:`DatabaseError` with a one-line reason otherwise."""
    if settings.DATABASE_ENGINE == "sqlite3":
        path = settings.sqlite_path()
        if not path.exists():
            if not create:
                raise DatabaseError(f"there is no database at {path} yet; create it with: txm syncdb")
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseError(f"cannot create the folder for the database {path}: {exc.strerror}") from None
    if db is None:
        db = make_database(settings)
    try:
        db.connect(reuse_if_open=True)
    except pw.OperationalError as exc:
        raise DatabaseError(f"cannot open the database ({settings.database_label()}): "
                            f"{first_line(exc)}") from None
    return db


def open_database(settings: Settings, create: bool = False, db: pw.Database | None = None) -> pw.Database:
    """Open the database the settings name (with ``db``, that database object of
    :func:`make_database`) and bind the models to it.

    With ``create`` false, a missing SQLite file or a database without txm's tables is a
    :class:`DatabaseError` that says to run ``txm syncdb``.
    """
    db = connect_database(settings, create, db)
    database.initialize(db)
    if not create and not db.table_exists(User._meta.table_name):
        db.close()
        raise DatabaseError(f"the database ({settings.database_label()}) has no txm tables yet; "
                            f"create them with: txm syncdb")
    return db


def close_quietly(db: pw.Database) -> None:
    """Close ``db`` after a failure, ignoring a connection that is already broken; the next use
    opens a fresh one."""
    try:
        if not db.is_closed():
            db.close()
    except pw.PeeweeException:
        pass


def first_line(exc: BaseException) -> str:
    """A database error as one line, for a log or a message (drivers' errors run over several)."""
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def create_tables(db: pw.Database, models: Iterable[type[pw.Model]] = MODELS) -> list[str]:
    """Create the tables that are missing; return their names."""
    models = list(models)
    missing = [m for m in models if not db.table_exists(m._meta.table_name)]
    with db.bind_ctx(models):
        db.create_tables(missing, safe=True)
    return [m._meta.table_name for m in missing]


def fix_sequences(db: pw.Database, models: Iterable[type[pw.Model]] = MODELS) -> None:
    """After rows were inserted with explicit ids, move PostgreSQL's id sequences past them."""
    d = Dialect.of(db)
    if d.kind != "postgresql":
        return
    for model in models:
        pk = model._meta.primary_key
        if isinstance(pk, pw.AutoField):
            table = d.ident(model._meta.table_name)
            db.execute_sql(
                f"SELECT setval(pg_get_serial_sequence('{table}', '{pk.column_name}'), "
                f"COALESCE((SELECT MAX({d.ident(pk.column_name)}) FROM {table}), 0) + 1, false)")

