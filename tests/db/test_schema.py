"""The schema against real databases: syncdb, constraints, precision, the legacy reset."""

from __future__ import annotations

import datetime as dt
from contextlib import closing

import peewee as pw
import pytest

from txm import config, manage
from txm.db import schema
from txm.db.database import open_database
from txm.errors import DatabaseError, InvalidValue, NotFound, TxmError
from txm.passwords import check_password


def test_syncdb_twice_is_safe_and_keeps_data(settings):
    first = manage.syncdb(settings)
    assert "auth_user" in first.created_tables and "sample" in first.created_tables
    assert first.created_admin
    admin = schema.User.get_by_id(1)
    assert admin.username == "Administrator" and admin.is_superuser and admin.is_staff
    assert check_password("admin", admin.password)
    manage.add_unit("M1", "k", 2)
    second = manage.syncdb(settings)
    assert second.created_tables == [] and not second.created_admin
    assert schema.Unit.select().count() == 1 and schema.User.select().count() == 1


def test_ids_continue_after_the_administrator(database):
    # On PostgreSQL the explicit id 1 must not leave the sequence behind.
    user = manage.add_user("alice", "pw")
    assert user.id == 2


def test_sqlite_runs_in_wal_mode(tmp_path):
    p = tmp_path / "txm.toml"
    p.write_text(f'DATABASE_NAME = "{tmp_path / "wal.db"}"\n')
    with closing(manage.syncdb(config.read_settings(p)).database) as database:
        assert database.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert database.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


def test_unit_timestamp_is_unique(database):
    unit = manage.add_unit("M1", "k", 2)
    ts = dt.datetime(2009, 1, 16, 15, 30, 45, 100000)
    schema.Sample.create(unit=unit, timestamp=ts, ch1=1.0, ch2=2.0)
    with pytest.raises(pw.IntegrityError):
        with database.atomic():
            schema.Sample.create(unit=unit, timestamp=ts, ch1=3.0, ch2=4.0)
    other = manage.add_unit("M2", "k", 2)
    schema.Sample.create(unit=other, timestamp=ts, ch1=1.0)  # same time, another unit: fine


def test_microseconds_and_32_channels_are_kept(database):
    unit = manage.add_unit("M1", "k", schema.MAX_CHANNELS)
    ts = dt.datetime(2097, 9, 12, 1, 2, 3, 4)
    values = {f"ch{i}": i * 1.5 - 20 for i in range(1, schema.MAX_CHANNELS + 1)}
    schema.Sample.create(unit=unit, timestamp=ts, **values)
    back = schema.Sample.get()
    assert back.timestamp == ts
    assert back.values() == [values[f"ch{i}"] for i in range(1, schema.MAX_CHANNELS + 1)]


def test_deleting_a_unit_takes_its_samples(database):
    unit = manage.add_unit("M1", "k", 1)
    for i in range(12):
        schema.Sample.create(unit=unit, timestamp=dt.datetime(2020, 1, 1, 0, 0, i), ch1=i)
    assert manage.remove_unit("M1") == 12
    assert schema.Sample.select().count() == 0


def test_the_manuals_recovery_statement_lets_the_administrator_in(database):
    manage.set_password("Administrator", "something-else")
    database.execute_sql("UPDATE auth_user SET password = 'sha1$$d033e22ae348aeb5660fc2140aec35850c4da997' "
                         "WHERE id = 1")
    assert check_password("admin", schema.User.get_by_id(1).password)


def test_reset_admin_after_rename(database):
    admin = schema.User.get_by_id(1)
    admin.username = "boss"
    admin.password = "pbkdf2_sha256$1$x$y"
    admin.save()
    assert manage.reset_admin().username == "boss"
    assert check_password("admin", schema.User.get_by_id(1).password)


def test_last_superuser_cannot_be_removed(database):
    with pytest.raises(TxmError, match="last active superuser"):
        manage.remove_user("Administrator")
    manage.add_user("second", "pw", superuser=True)
    manage.remove_user("Administrator")
    assert not schema.User.select().where(schema.User.username == "Administrator").exists()


@pytest.mark.parametrize("code", ["", "M-1", "M 1", "M/1", "Ü1", "x" * 65])
def test_unit_codes_are_alphanumeric(database, code):
    with pytest.raises(InvalidValue, match="letters and digits"):
        manage.add_unit(code, "k", 1)


@pytest.mark.parametrize("kwargs,fragment", [
    ({"channels": 0}, "1 to 32 data fields"),
    ({"channels": 33}, "1 to 32 data fields"),
    ({"key": "has space"}, "no spaces"),
    ({"labels": "A,B,C"}, "3 labels given for 2"),
    ({"labels": "A=1,B"}, "may not hold spaces"),
])
def test_unit_values_are_checked(database, kwargs, fragment):
    args = {"code": "M1", "key": "k", "channels": 2, **kwargs}
    with pytest.raises(InvalidValue, match=fragment):
        manage.add_unit(**args)


def test_channel_labels_fill_in(database):
    unit = manage.add_unit("M1", "k", 3, labels="Flow,,Temp")
    assert unit.channel_labels() == ["Flow", "ch2", "Temp"]


def test_missing_database_says_to_run_syncdb(tmp_path):
    p = tmp_path / "txm.toml"
    p.write_text(f'DATABASE_NAME = "{tmp_path / "absent.db"}"\n')
    with pytest.raises(DatabaseError, match="txm syncdb"):
        open_database(config.read_settings(p))
    assert not (tmp_path / "absent.db").exists()


def test_empty_database_says_to_run_syncdb(tmp_path):
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    p = tmp_path / "txm.toml"
    p.write_text(f'DATABASE_NAME = "{tmp_path / "empty.db"}"\n')
    with pytest.raises(DatabaseError, match="no txm tables yet"):
        open_database(config.read_settings(p))


def test_unreachable_server_is_a_clear_error(tmp_path):
    p = tmp_path / "txm.toml"
    p.write_text('[database]\nDATABASE_ENGINE = "postgresql"\nDATABASE_HOST = "127.0.0.1"\n'
                 'DATABASE_PORT = 1\nDATABASE_NAME = "x"\n')
    with pytest.raises(DatabaseError, match="cannot open the database"):
        open_database(config.read_settings(p))


def test_get_unit_not_found(database):
    with pytest.raises(NotFound, match="no unit with code 'X'"):
        schema.Unit.by_code("X")


def test_sample_ids_are_never_reused(database):
    """Exports and LoggerNet record numbers rely on ids that only grow, even after deletions."""
    unit = manage.add_unit("M1", "k", 1)
    first = schema.Sample.create(unit=unit, timestamp=dt.datetime(2020, 1, 1), ch1=1)
    newest = schema.Sample.create(unit=unit, timestamp=dt.datetime(2020, 1, 2), ch1=2)
    newest.delete_instance()
    again = schema.Sample.create(unit=unit, timestamp=dt.datetime(2020, 1, 3), ch1=3)
    assert again.id > newest.id > first.id
