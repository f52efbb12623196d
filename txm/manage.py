"""Administrative operations behind ``txm syncdb``, ``txm user``, ``txm unit`` and ``txm reset-admin``.

Each function works on the bound database (see :func:`txm.db.open_database`) and raises
:class:`txm.errors.TxmError` subclasses that say what is wrong in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import peewee as pw

from txm.config import Settings
from txm.db import schema
from txm.db.bulk import delete_in_batches
from txm.db.database import create_tables, fix_sequences, open_database
from txm.db.sqlite import write_transaction
from txm.errors import InvalidValue, NotFound, TxmError
from txm.passwords import DEFAULT_PASSWORD, make_password

ADMIN_ID = 1
ADMIN_NAME = "Administrator"


@dataclass
class SyncResult:
    database: pw.Database
    created_tables: list[str]
    created_admin: bool


def syncdb(settings: Settings, database: pw.Database | None = None) -> SyncResult:
    """Create the database and any missing tables; create the first superuser if there is no user.

    Safe to run again and again, and on a database that holds data. ``database``: a database
    object made (not connected) by :func:`txm.db.make_database`, to use instead of a new one.
    """
    database = open_database(settings, create=True, db=database)
    created = create_tables(database)
    created_admin = False
    with database.atomic():
        if not schema.User.select().exists():
            schema.User.create(id=ADMIN_ID, username=ADMIN_NAME, password=make_password(DEFAULT_PASSWORD),
                               is_staff=True, is_superuser=True, is_active=True)
            created_admin = True
    if created_admin:
        fix_sequences(database, [schema.User])
    return SyncResult(database, created, created_admin)


def reset_admin() -> schema.User:
    """Set the password of the user with id 1 back to the default, whatever its name now."""
    user = schema.User.get_or_none(schema.User.id == ADMIN_ID)
    if user is None:
        raise NotFound("there is no user with id 1; run txm syncdb to create the administrator")
    user.password = make_password(DEFAULT_PASSWORD)
    user.is_active = True
    user.save()
    return user


# --- users -----------------------------------------------------------------------------------


def get_user(username: str) -> schema.User:
    user = schema.User.get_or_none(schema.User.username == username)
    if user is None:
        raise NotFound(f"there is no user named {username!r}; see txm user list")
    return user


def check_password_value(password: str) -> str:
    if password is None or len(password) < 1:
        raise InvalidValue("a password needs at least one character")
    return password


def add_user(username: str, password: str, email: str = "", staff: bool = False,
             superuser: bool = False) -> schema.User:
    """Create a user; a superuser is staff too."""
    username = (username or "").strip()
    if not username or len(username) > 150:
        raise InvalidValue("a user name needs 1 to 150 characters")
    if schema.User.select().where(schema.User.username == username).exists():
        raise InvalidValue(f"a user named {username!r} already exists")
    check_password_value(password)
    return schema.User.create(username=username, password=make_password(password), email=email.strip(),
                              is_staff=staff or superuser, is_superuser=superuser)


def set_password(username: str, password: str) -> schema.User:
    user = get_user(username)
    user.password = make_password(check_password_value(password))
    user.save()
    return user


def active_superusers() -> pw.ModelSelect:
    return schema.User.select().where(schema.User.is_superuser & schema.User.is_active)


def remove_user(username: str) -> None:
    """Delete a user; the last active superuser cannot be removed."""
    user = get_user(username)
    if user.is_superuser and user.is_active and active_superusers().count() <= 1:
        raise TxmError(f"{username!r} is the last active superuser; make another superuser first")
    user.delete_instance()


# --- units -----------------------------------------------------------------------------------


def parse_labels(text: str | Sequence[str] | None, channels: int) -> list[str]:
    """Channel labels from ``L1,L2,...``; they must fit TTP's ``L=value`` form."""
    if text is None or text == "":
        return []
    labels = [part.strip() for part in (text.split(",") if isinstance(text, str) else text)]
    if len(labels) > channels:
        raise InvalidValue(f"{len(labels)} labels given for {channels} channel(s)")
    for label in labels:
        if any(ch.isspace() or ch in "=<>;,\"'" for ch in label) or len(label) > 64:
            raise InvalidValue(f"channel label {label!r} may not hold spaces or any of = < > ; , \" ' "
                               f"and has at most 64 characters")
    return labels


def check_channels(channels: int) -> int:
    if not 1 <= channels <= schema.MAX_CHANNELS:
        raise InvalidValue(f"a unit has 1 to {schema.MAX_CHANNELS} data fields, not {channels}")
    return channels


def check_key(key: str) -> str:
    if not key or any(ch.isspace() for ch in key) or len(key) > 128:
        raise InvalidValue("a unit key needs 1 to 128 characters and no spaces (it ends every TTP request)")
    return key


def add_unit(code: str, key: str, channels: int, name: str = "", labels: str | Sequence[str] | None = None,
             show_labels: bool = False) -> schema.Unit:
    schema.check_unit_code(code)
    check_key(key)
    check_channels(channels)
    if schema.Unit.select().where(schema.Unit.code == code).exists():
        raise InvalidValue(f"a unit with code {code!r} already exists")
    return schema.Unit.create(code=code, key=key, channels=channels, name=name,
                              labels=parse_labels(labels, channels), show_labels=show_labels)


def sample_count(unit: schema.Unit) -> int:
    return schema.Sample.select().where(schema.Sample.unit == unit).count()


def remove_unit(code: str) -> int:
    """Delete a unit with all its samples and alarms; return how many samples went. The samples go
    in batches (:func:`txm.db.bulk.delete_in_batches`), so a running txm serve gets the lock in between."""
    unit = schema.Unit.by_code(code)
    removed = delete_in_batches(schema.Sample, schema.Sample.unit == unit, schema.Sample.timestamp)
    with write_transaction():
        unit.delete_instance(recursive=True)
    return removed
