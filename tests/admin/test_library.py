"""The admin panel's library without HTTP: forms and checks, permissions, the log, bulk deletion."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.samples import add_samples
from txm import manage
from txm.admin.actor import Actor, Forbidden
from txm.admin.forms import FormInput
from txm.admin.meters import preview_alarm_message
from txm.admin.records import SAMPLES
from txm.admin.registry import registry
from txm.db import schema
from txm.db.bulk import BATCH_SIZE
from txm.db.database import make_database
from txm.db.samples import SampleStore
from txm.db.sqlite import write_transaction
from txm.passwords import check_password


@pytest.fixture
def admin(database, settings):
    return Actor.of(schema.User.get_by_id(1), settings)


def form(**values):
    return FormInput({k: ("on" if v is True else v) for k, v in values.items() if v is not False})


def unit_input(**over):
    values = {"code": "M1", "key": "k1", "name": "Mill", "channels": "3", "labels": "Flow,Temp",
              "graph_width": "800", "graph_height": "400", "graph_axes": "1", "has_reports": "on"}
    values.update(over)
    return form(**values)


def test_unit_add_change_and_log(admin):
    units = registry()["unit"]
    result = units.submit(admin, unit_input())
    assert result.errors == {}
    unit = result.saved
    assert (unit.code, unit.channels, unit.labels, unit.graph_axes) == ("M1", 3, ["Flow", "Temp"], [])
    entry = schema.LogEntry.get()
    assert (entry.action, entry.model, entry.object_id, entry.username) == ("add", "unit", str(unit.id),
                                                                            "Administrator")

    result = units.submit(admin, unit_input(name="Big mill", key="secret2", graph_axes="2",
                                            axis1_label="Flow", axis1_channels="1",
                                            axis2_label="Temp", axis2_channels="2-3"), unit)
    assert result.errors == {}
    unit = schema.Unit.get_by_id(unit.id)
    assert unit.graph_axes == [{"label": "Flow", "channels": [1]}, {"label": "Temp", "channels": [2, 3]}]
    change = schema.LogEntry.select().order_by(schema.LogEntry.id.desc()).first()
    assert change.action == "change"
    assert "Name from 'Mill' to 'Big mill'" in change.change_message
    assert change.change_message.startswith("Changed Unit key;")
    assert "secret2" not in change.change_message and "k1" not in change.change_message


def test_unit_validation_keeps_input(admin):
    units = registry()["unit"]
    units.submit(admin, unit_input())
    result = units.submit(admin, unit_input(code="M1", channels="40", name="typed <b>"))
    assert result.saved is None
    assert "already has the code" in result.errors["code"]
    assert "1 to 32" in result.errors["channels"]
    assert result.values["name"] == "typed <b>" and result.values["channels"] == "40"
    result = units.submit(admin, unit_input(code="M 2", key="a b", labels="a=b",
                                            graph_axes="2", axis1_channels="1", axis2_channels="9"))
    assert set(result.errors) >= {"code", "key", "labels", "axis2_channels"}
    result = units.submit(admin, unit_input(code="M2", graph_width="10", report_fields="1, 4"))
    assert "100 to 4000" in result.errors["graph_width"]
    assert schema.Unit.select().count() == 1


def test_permissions_decide(admin, settings):
    clerk = manage.add_user("clerk", "pw", staff=True)
    schema.UserPermission.create(user=clerk, codename="view_unit")
    actor = Actor.of(clerk, settings)
    assert actor.may("view", "unit") and not actor.may("add", "unit")
    with pytest.raises(Forbidden):
        registry()["unit"].submit(actor, unit_input())
    schema.UserPermission.create(user=clerk, codename="change_group")
    actor = Actor.of(clerk, settings)
    assert actor.may("view", "group")  # who may change may view
    # A staff user hands out only the permissions they hold themselves.
    offered = {f.name: f for f in registry()["group"].fields(actor, None)}["permissions"].choices
    assert {c[0] for c in offered} == {"view_unit", "change_group"}


def test_last_superuser_and_self_demotion(admin, settings):
    users = registry()["user"]
    me = admin.user
    values = users.new_form(admin, me).values
    values["is_superuser"] = ""
    result = users.submit(admin, form(**values), me)
    assert "last active superuser" in result.errors["is_superuser"]
    assert "Tick this box" in result.errors["confirm_self"]
    with pytest.raises(Exception, match="last active superuser"):
        users.delete(admin, me)

    manage.add_user("boss2", "pw", superuser=True)
    result = users.submit(admin, form(username="Administrator", is_active="on", is_staff="on"), me)
    assert list(result.errors) == ["confirm_self"]
    result = users.submit(admin, form(username="Administrator", is_active="on", is_staff="on",
                                      confirm_self="on"), me)
    assert result.errors == {} and not schema.User.get_by_id(1).is_superuser


def test_user_add_password_and_weak_warning(admin):
    users = registry()["user"]
    result = users.submit(admin, form(username="ann", password1="x", password2="y"))
    assert result.errors == {"password2": "The two passwords differ."}
    assert "password1" not in result.values or result.values["password1"] == ""  # passwords are not echoed
    result = users.submit(admin, form(username="ann", password1="x", password2="x", email="ann@example.com",
                                      is_active="on", units=[]))
    assert result.errors == {} and "weak" in result.warnings[0]
    ann = result.saved
    assert check_password("x", ann.password)
    result = users.set_password(admin, ann, form(password1="", password2=""))
    assert "required" in result.errors["password1"]
    result = users.set_password(admin, ann, form(password1="Long-enough-9", password2="Long-enough-9"))
    assert result.errors == {} and result.warnings == []
    assert check_password("Long-enough-9", schema.User.get_by_id(ann.id).password)
    assert schema.LogEntry.select().where(schema.LogEntry.change_message == "Changed password.").count() == 1


def test_view_entries(admin):
    unit = registry()["unit"].submit(admin, unit_input()).saved
    views = registry()["view"]
    result = views.submit(admin, form(name="Plant", refresh_seconds="5", rows="3", entry1_unit=str(unit.id),
                                      entry1_channels="1,3", entry2_channels="2"))
    assert "Choose the unit" in result.errors["entry2_unit"]
    assert result.values["entry1_channels"] == "1,3"
    result = views.submit(admin, form(name="Plant", refresh_seconds="5", rows="3", entry1_unit=str(unit.id),
                                      entry1_channels="1,3"))
    assert result.errors == {}
    entry = schema.ViewEntry.get()
    assert (entry.unit_id, entry.channels) == (unit.id, [1, 3])


def test_alarm_message_template_refused(admin):
    unit = registry()["unit"].submit(admin, unit_input()).saved
    messages = registry()["alarmmessage"]
    result = messages.submit(admin, form(unit=str(unit.id), level="2", subject="Alarm {{ level",
                                         body="ok"))
    assert "line 1" in result.errors["subject"]
    assert result.values["subject"] == "Alarm {{ level"
    result = messages.submit(admin, form(unit=str(unit.id), level="2", subject="{{ unit.name }} alarm {{ level }}",
                                         body="{% if data.0 %}At {{ data.0 }}{% endif %}"))
    assert result.errors == {}
    subject, body = preview_alarm_message(unit, 2, result.saved.subject, result.saved.body)
    assert subject == "Mill alarm 2" and body.startswith("At 2026-01-01 12:00:00")


def test_bulk_delete_samples_batches_one_entry(admin):
    unit = registry()["unit"].submit(admin, unit_input()).saved
    other = registry()["unit"].submit(admin, unit_input(code="M2")).saved
    add_samples(unit, 12_345)
    add_samples(other, 10)
    before = schema.LogEntry.select().count()
    result = SAMPLES.delete_bulk(admin, unit, dt.datetime(2026, 1, 1) + dt.timedelta(seconds=6000))
    assert result.deleted == 6000
    assert schema.Sample.select().where(schema.Sample.unit == unit).count() == 6345
    assert schema.LogEntry.select().count() == before + 1
    entry = schema.LogEntry.select().order_by(schema.LogEntry.id.desc()).first()
    assert "6000 sample(s) of unit M1 older than 2026-01-01 01:40:00" in entry.change_message
    assert entry.object_repr == "M1 sample at 2026-01-01 01:39:59"
    result = SAMPLES.delete_bulk(admin, unit)
    assert result.deleted == 6345 and schema.Sample.select().count() == 10


@pytest.mark.sqlite_only
def test_a_bulk_deletion_lets_another_writer_in_between_batches(admin, settings):
    """SQLite has one write lock, and a deletion in one long transaction would keep the TTP
    server out until the end: another connection that starts waiting for the lock during the
    deletion gets it while the deletion is still under way. (How short the wait is, which the
    pause after each batch decides, is a timing: bench/admin_bench.py measures it.)"""
    import threading

    unit = registry()["unit"].submit(admin, unit_input()).saved
    add_samples(unit, 20 * BATCH_SIZE)
    done = threading.Event()

    def delete() -> None:
        try:
            SAMPLES.delete_bulk(admin, unit)
        finally:
            schema.database.close()
            done.set()

    other = make_database(settings)
    other.connect()
    deleter = threading.Thread(target=delete)
    deleter.start()
    try:
        while other.execute_sql("SELECT COUNT(*) FROM sample").fetchone()[0] == 20 * BATCH_SIZE:
            assert not done.is_set()  # the deletion is under way once the first batch went
        with write_transaction(other):
            other.execute_sql("UPDATE unit SET name = 'written meanwhile' WHERE id = ?", (unit.id,))
            left = other.execute_sql("SELECT COUNT(*) FROM sample").fetchone()[0]
    finally:
        deleter.join(60)
        other.close()
    assert 0 < left < 20 * BATCH_SIZE, "the other writer waited for the whole deletion"


def test_deletion_switched_off(admin, settings):
    unit = registry()["unit"].submit(admin, unit_input()).saved
    add_samples(unit, 3)
    off = Actor.of(admin.user, settings.replace(ALLOW_SAMPLE_DELETION=False))
    with pytest.raises(Forbidden, match="ALLOW_SAMPLE_DELETION"):
        SAMPLES.delete_bulk(off, unit)
    with pytest.raises(Forbidden):
        SAMPLES.delete_selected(off, [schema.Sample.select().first().id])
    assert schema.Sample.select().count() == 3


def test_delete_selected_logs_each(admin):
    unit = registry()["unit"].submit(admin, unit_input()).saved
    add_samples(unit, 5)
    ids = [s.id for s in schema.Sample.select().limit(3)]
    assert SAMPLES.delete_selected(admin, ids) == 3
    assert schema.LogEntry.select().where((schema.LogEntry.model == "sample") & (schema.LogEntry.action == "delete")).count() == 3


def test_sample_keyset_pages(admin):
    unit = registry()["unit"].submit(admin, unit_input()).saved
    add_samples(unit, 120)
    first = SAMPLES.page(unit=unit, size=50)
    assert first.newer is None and first.older is not None
    assert first.rows[0].timestamp == dt.datetime(2026, 1, 1, 0, 1, 59)
    second = SAMPLES.page(unit=unit, before=first.older, size=50)
    third = SAMPLES.page(unit=unit, before=second.older, size=50)
    assert len(third.rows) == 20 and third.older is None
    seen = [s.id for s in first.rows + second.rows + third.rows]
    assert len(set(seen)) == 120
    back = SAMPLES.page(unit=unit, after=third.newer, size=50)
    assert [s.id for s in back.rows] == [s.id for s in second.rows]
    ranged = SAMPLES.page(unit=unit, start=dt.datetime(2026, 1, 1, 0, 0, 10), end=dt.datetime(2026, 1, 1, 0, 0, 20))
    assert len(ranged.rows) == 10


def test_unit_change_takes_effect_for_ttp(admin):
    """The TTP server's unit lookup sees a key changed through the panel at its next pass."""
    unit = registry()["unit"].submit(admin, unit_input()).saved
    store_db = make_database(admin.settings)  # the TTP server's own connection
    store_db.connect()
    store = SampleStore(store_db)
    try:
        with store_db.atomic():
            assert store.units_for_pass(["M1"])["M1"].key == "k1"
        registry()["unit"].submit(admin, unit_input(key="k2"), unit)
        with store_db.atomic():
            assert store.units_for_pass(["M1"])["M1"].key == "k2"
    finally:
        store_db.close()


def test_panel_writes_wait_for_a_busy_ttp_server(admin, settings):
    """With a meter uploading without pause, the panel's writes never fail with "database is locked"."""
    import threading

    from txm.client import TTPClient
    from txm.serve import ServerThread

    units = registry()["unit"]
    victim = units.submit(admin, unit_input()).saved
    units.submit(admin, unit_input(code="M2", key="k2"))
    add_samples(victim, 3000)
    schema.database.close()
    stop = threading.Event()
    replies: list[str] = []

    def upload(port: int) -> None:
        stamp = dt.datetime(2030, 1, 1)
        with TTPClient(port=port, timeout=30) as meter:
            while not stop.is_set():
                stamp += dt.timedelta(seconds=1)
                replies.append(meter.request(f"TTP /up/M2/<{stamp:%Y-%m-%d %H:%M:%S};1;2;3> k2"))

    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"), timeout=10,
                      module_services=False) as server:
        meter = threading.Thread(target=upload, args=(server.ttp_port,))
        meter.start()
        try:
            schema.database.connect(reuse_if_open=True)
            for i in range(40):
                ids = [s.id for s in schema.Sample.select(schema.Sample.id).where(schema.Sample.unit == victim).limit(5)]
                assert SAMPLES.delete_selected(admin, ids) == 5
                assert units.submit(admin, unit_input(name=f"Mill {i}"), victim).errors == {}
            SAMPLES.delete_bulk(admin, victim)
        finally:
            stop.set()
            meter.join(30)
    assert schema.Sample.select().where(schema.Sample.unit == victim).count() == 0
    assert len(replies) > 0 and set(replies) == {"OK"}
