"""``txm migrate-db``: SQLite to PostgreSQL/MariaDB and back, against the real servers."""

from __future__ import annotations

import datetime as dt
from contextlib import closing

import pytest
from click.testing import CliRunner

from tests.conftest import write_toml
from txm import config, manage
from txm.cli import cli
from txm.db import schema
from txm.db.database import make_database, open_database
from txm.db.migrate import count_rows, migrate, settings_for
from txm.errors import InvalidValue, TxmError


def fill(settings: config.Settings) -> None:
    """An installation with rows in the tables that matter, including awkward values."""
    with closing(manage.syncdb(settings).database):
        unit = manage.add_unit("M1", "k3y", 3, name="Nörth tank", labels="Flow,Level,Temp", show_labels=True)
        other = manage.add_unit("M2", "k", 1)
        alice = manage.add_user("alice", "pw", email="a@example.com", staff=True)
        group = schema.Group.create(name="site")
        schema.UserGroup.create(user=alice, group=group)
        schema.GroupPermission.create(group=group, codename="view_sample")
        schema.UserUnit.create(user=alice, unit=unit)
        rows = [{"unit": unit.id, "timestamp": dt.datetime(2020, 1, 1) + dt.timedelta(seconds=i, microseconds=i),
                 "ch1": i * 0.5, "ch2": -i, "ch3": 1e-9 * i} for i in range(2500)]
        with schema.database.atomic():
            for start in range(0, len(rows), 500):
                schema.Sample.insert_many(rows[start:start + 500]).execute()
        schema.Sample.create(unit=other, timestamp=dt.datetime(2021, 5, 6, 7, 8, 9, 123456), ch1=42)
        schema.Alarm.create(unit=unit, level=2, data=["2020-01-01 00:00:00", "99.5"], email_status="sent")
        mlist = schema.MailingList.create(unit=unit, name="ops")
        schema.MailingListMember.create(mailing_list=mlist, user=alice)
        schema.AlarmMessage.create(unit=unit, level=2, subject="{{ unit.name }} alarm", body="Level {{ level }}")
        view = schema.View.create(name="Overview", refresh_seconds=5)
        schema.ViewEntry.create(view=view, unit=unit, channels=[1, 3], position=0)
        schema.LogEntry.create(user=alice, username="alice", action="add", model="unit", object_id=str(unit.id),
                               object_repr="M1", change_message="created")


def test_sqlite_to_backend_and_back(tmp_path, settings, backend):
    if backend.name == "sqlite":
        # The fixture's database is SQLite: copy SQLite to SQLite through URLs instead.
        destination = settings_for(f"sqlite:///{tmp_path / 'copy.db'}")
    else:
        destination = settings
    source = config.read_settings(write_toml(tmp_path / "src.toml", {"DATABASE_NAME": str(tmp_path / "src.db")}))
    fill(source)
    seen = []
    counts = migrate(source, destination, batch_size=700, progress=lambda t, d, n: seen.append((t, d, n)))
    by_table = {c.table: c.destination for c in counts}
    assert by_table["sample"] == 2501 and by_table["auth_user"] == 2 and by_table["alarm"] == 1
    assert ("sample", 2501, 2501) in seen and ("sample", 700, 2501) in seen

    with closing(open_database(destination)):
        unit = schema.Unit.get(schema.Unit.code == "M1")
        assert unit.name == "Nörth tank" and unit.labels == ["Flow", "Level", "Temp"] and unit.show_labels
        newest = schema.Sample.get(schema.Sample.unit == schema.Unit.get(schema.Unit.code == "M2"))
        assert newest.timestamp == dt.datetime(2021, 5, 6, 7, 8, 9, 123456)
        s = schema.Sample.get((schema.Sample.unit == unit) & (schema.Sample.ch1 == 1249.5))
        assert s.timestamp == dt.datetime(2020, 1, 1, 0, 41, 39, 2499) and s.ch3 == pytest.approx(2.499e-6)
        assert schema.ViewEntry.get().channels == [1, 3]
        # ids continue after the copied ones on every engine
        assert manage.add_user("bob", "pw").id == 3
        assert manage.add_unit("M3", "k", 1).id == 3

    back = config.read_settings(write_toml(tmp_path / "back.toml", {"DATABASE_NAME": str(tmp_path / "back.db")}))
    migrate(destination, back)
    with closing(make_database(back)) as copy, closing(make_database(destination)) as original:
        assert count_rows(copy) == count_rows(original)


def test_destination_with_data_is_refused(tmp_path, settings):
    source = config.read_settings(write_toml(tmp_path / "src.toml", {"DATABASE_NAME": str(tmp_path / "src.db")}))
    fill(source)
    manage.syncdb(settings).database.close()  # the Administrator is data
    with pytest.raises(TxmError, match="already holds data"):
        migrate(source, settings)


@pytest.mark.parametrize("spec,fragment", [
    ("oracle://x/y", "unknown database kind"),
    ("postgresql://host", "names no database"),
    ("sqlite://", "names no file"),
    ("no-such-file.toml", "neither a database URL"),
])
def test_bad_specs(spec, fragment):
    with pytest.raises(InvalidValue, match=fragment):
        settings_for(spec)


def test_url_parts():
    s = settings_for("postgresql://txm:s%40cret@db1:5433/meters")
    assert (s.DATABASE_ENGINE, s.DATABASE_USER, s.DATABASE_PASSWORD, s.DATABASE_HOST, s.DATABASE_PORT,
            s.DATABASE_NAME) == ("postgresql", "txm", "s@cret", "db1", 5433, "meters")


def test_cli(tmp_path):
    source = config.read_settings(write_toml(tmp_path / "src.toml", {"DATABASE_NAME": str(tmp_path / "src.db")}))
    fill(source)
    result = CliRunner().invoke(cli, ["migrate-db", "--from", str(tmp_path / "src.toml"),
                                      "--to", f"sqlite:///{tmp_path / 'dst.db'}"])
    assert result.exit_code == 0, result.output
    assert "row counts match" in result.output
    result = CliRunner().invoke(cli, ["migrate-db", "--from", f"sqlite:///{tmp_path / 'missing.db'}",
                                      "--to", f"sqlite:///{tmp_path / 'x.db'}"])
    assert result.exit_code == 1 and "there is no database" in result.output
