"""The admin panel through real HTTP requests to the WSGI app: pages, permissions, the log, deletion."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from tests.admin.routes import admin_routes, objects_of_every_model, snapshot_database
from tests.samples import add_samples
from tests.webutil import add_user, client, csrf_token, login
from txm.db import schema
from txm.passwords import check_password
from txm.permissions import permissions_of
from txm.serve import make_site

A = "/admin"


@pytest.fixture
def web(settings, database):
    return client(settings)


@pytest.fixture
def boss(web):
    """The web client logged in as a superuser."""
    add_user("boss", is_staff=True, is_superuser=True, email="boss@example.com")
    login(web, "boss")
    return web


def token(web) -> str:
    return csrf_token(web.get(A + "/"))


def post(web, path, data, status=None):
    """POST a form of the panel with the session's CSRF token; check the status (showing any server error)."""
    data = dict(data)
    data.setdefault("csrf_token", token(web))
    res = web.post(A + path, data, expect_errors=True)
    if status is not None:
        assert res.status_int == status, f"POST {path}: {res.status}\n{res.errors}\n{res.text[-2000:]}"
    return res


def make_unit(code="M1", channels=3, key="k1", name="Mill") -> schema.Unit:
    return schema.Unit.create(code=code, key=key, name=name, channels=channels)


def latest_log() -> schema.LogEntry:
    return schema.LogEntry.select().order_by(schema.LogEntry.id.desc()).first()


# --- who may enter -----------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_login(web):
    res = web.get(A + "/unit/", status=303)
    assert "/login?next=/admin/unit/" in res.location


def test_non_staff_user_is_refused(web):
    user = add_user("ann", is_staff=False)
    schema.UserPermission.create(user=user, codename="view_unit")  # permissions alone do not let one in
    login(web, "ann")
    assert web.get(A + "/", status=403)
    assert web.get(A + "/unit/", status=403)
    assert web.get(A + "/sample/", status=403)


def test_inactive_staff_is_not_let_in(web):
    user = add_user("ann", is_staff=True, is_superuser=True)
    login(web, "ann")
    schema.User.update(is_active=False).where(schema.User.id == user.id).execute()
    assert web.get(A + "/", status=303).location.endswith("/login?next=/admin/")


def test_index_lists_only_what_the_user_may_see(web):
    user = add_user("clerk", is_staff=True)
    schema.UserPermission.create(user=user, codename="view_unit")
    login(web, "clerk")
    page = web.get(A + "/")
    assert page.headers["X-Frame-Options"] == "DENY"  # the panel cannot be framed by another site
    assert 'href="/admin/unit/"' in page.text
    assert 'href="/admin/user/"' not in page.text and 'href="/admin/sample/"' not in page.text
    assert 'href="/admin/unit/add"' not in page.text


def test_csrf_token_is_required(boss):
    res = boss.post(A + "/unit/add", {"code": "M9", "key": "k", "channels": "1"}, status=403)
    assert "expired" in res.text
    assert not schema.Unit.select().exists()


# --- each model: list, add, change, delete -----------------------------------------------------------


def unit_form(**over):
    values = {"code": "M7", "key": "key7", "name": "Tank", "channels": "2", "labels": "Flow,Level",
              "graph_width": "640", "graph_height": "300", "graph_axes": "1", "has_reports": "on"}
    values.update(over)
    return values


def crud_cases():
    """For each form model: valid add input, a change (field, value), and how to find the object."""
    return {
        "unit": (lambda: unit_form(), ("name", "Big tank"), lambda: schema.Unit.get(schema.Unit.code == "M7")),
        "user": (lambda: {"username": "zed", "password1": "Secret-pass-1", "password2": "Secret-pass-1",
                          "email": "zed@example.com", "is_active": "on"},
                 ("email", "zed@example.org"), lambda: schema.User.get(schema.User.username == "zed")),
        "group": (lambda: {"name": "Operators", "permissions": ["view_unit", "view_sample"]},
                  ("name", "Night operators"), lambda: schema.Group.get()),
        "mailinglist": (lambda: {"unit": str(make_unit().id), "name": "Plant", "members": ["1"]},
                        ("name", "Plant crew"), lambda: schema.MailingList.get()),
        "alarmmessage": (lambda: {"unit": str(make_unit().id), "level": "3",
                                  "subject": "{{ unit.code }} level {{ level }}", "body": "Data: {{ data.0 }}"},
                         ("subject", "Alarm {{ level }}"), lambda: schema.AlarmMessage.get()),
        "view": (lambda: {"name": "Plant", "refresh_seconds": "5", "rows": "2", "entry1_unit": str(make_unit().id),
                          "entry1_channels": "1, 2"},
                 ("refresh_seconds", "30"), lambda: schema.View.get()),
    }


@pytest.mark.parametrize("model", sorted(crud_cases()))
def test_list_add_change_delete(boss, model):
    add_input, (field, new_value), find = crud_cases()[model]
    assert boss.get(f"{A}/{model}/").status_int == 200
    assert boss.get(f"{A}/{model}/add").status_int == 200
    res = post(boss, f"/{model}/add", add_input(), status=303)
    assert res.location.endswith(f"/admin/{model}/")
    obj = find()
    assert latest_log().action == "add" and latest_log().model == model
    listing = res.follow()
    assert "was added" in listing.text and f'href="/admin/{model}/{obj.id}/"' in listing.text

    page = boss.get(f"{A}/{model}/{obj.id}/")
    assert page.status_int == 200
    form = page_values(page.text)
    form[field] = new_value
    form.pop("password1", None)
    res = post(boss, f"/{model}/{obj.id}/", form, status=303)
    changed = type(obj).get_by_id(obj.id)
    assert str(getattr(changed, field)) == new_value
    entry = latest_log()
    assert entry.action == "change" and entry.object_id == str(obj.id)
    assert new_value in entry.change_message

    confirm = boss.get(f"{A}/{model}/{obj.id}/delete")
    assert "Are you sure" in confirm.text
    res = post(boss, f"/{model}/{obj.id}/delete", {}, status=303)
    assert not type(obj).select().where(type(obj).id == obj.id).exists()
    assert latest_log().action == "delete"


def page_values(html: str) -> dict:
    """What a browser would submit from the page's main form (text inputs, checked boxes, selects)."""
    form = html.split('class="admin-form"', 1)[1].split("</form>", 1)[0]
    values: dict[str, list[str] | str] = {}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or name.group(1) == "csrf_token" or " disabled" in tag:
            continue
        kind = re.search(r'type="([^"]+)"', tag)
        value = re.search(r'value="([^"]*)"', tag)
        value = _unescape(value.group(1)) if value else ""
        if kind and kind.group(1) == "checkbox":
            if " checked" in tag:
                values.setdefault(name.group(1), [])
                values[name.group(1)].append(value)
            continue
        values[name.group(1)] = value
    for name, body in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', body)
        values[name] = chosen.group(1) if chosen else ""
    for name, body in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        values[name] = _unescape(body)
    return values


def _unescape(text: str) -> str:
    return (text.replace("&lt;", "<").replace("&gt;", ">").replace("&#34;", '"').replace("&#39;", "'")
            .replace("&quot;", '"').replace("&amp;", "&"))


# --- permissions: every route of a model refuses a staff user without its permission ------------------


def test_staff_without_permission_gets_403_on_every_route(settings, web):

    ids = objects_of_every_model()
    routes = admin_routes(make_site(settings), ids)
    assert ("POST", "/sample/delete-selected") in routes["sample"]
    assert ("POST", f"/user/{ids['user']}/password") in routes["user"]
    assert ("GET", f"/view/{ids['view']}/delete") in routes["view"]
    clerk = add_user("clerk", is_staff=True)
    login(web, "clerk")
    csrf = token(web)
    before = snapshot_database()
    for model, obj_id in ids.items():
        for method, path in routes[model]:
            if method == "GET":
                res = web.get(A + path, expect_errors=True)
            else:
                res = web.post(A + path, {"csrf_token": csrf, "ids": str(obj_id), "confirm": "yes",
                                          "name": "changed", "before": "2100-01-01"}, expect_errors=True)
            assert res.status_int == 403, f"{method} {path} answered {res.status_int}, not 403"
    assert snapshot_database() == before

    # Viewing is not changing: with view_* only, every change route still answers 403.
    for model in ids:
        schema.UserPermission.create(user=clerk, codename=f"view_{model}")
    before = snapshot_database()
    for model, obj_id in ids.items():
        for method, path in routes[model]:
            if method == "POST" or path.endswith(("/add", "/delete", "/password")) or "delete-" in path:
                res = (web.get(A + path, expect_errors=True) if method == "GET" else
                       web.post(A + path, {"csrf_token": csrf, "ids": str(obj_id), "name": "x"}, expect_errors=True))
                assert res.status_int == 403, f"{method} {path} answered {res.status_int} with view rights only"
            else:
                assert web.get(A + path).status_int == 200, path
    assert snapshot_database() == before


def test_a_permission_through_a_group_counts(web):
    make_unit()
    clerk = add_user("clerk", is_staff=True)
    group = schema.Group.create(name="Unit keepers")
    schema.GroupPermission.create(group=group, codename="change_unit")
    schema.UserGroup.create(user=clerk, group=group)
    login(web, "clerk")
    unit = schema.Unit.get()
    post(web, f"/unit/{unit.id}/", unit_form(code="M1", name="Renamed"), status=303)
    assert schema.Unit.get_by_id(unit.id).name == "Renamed"
    assert web.get(A + "/unit/add", status=403)


def test_a_staff_user_cannot_grant_more_than_they_hold(web):
    clerk = add_user("clerk", is_staff=True)
    for codename in ("add_user", "change_user", "view_user"):
        schema.UserPermission.create(user=clerk, codename=codename)
    login(web, "clerk")
    post(web, "/user/add", {"username": "new", "password1": "p", "password2": "p", "is_active": "on",
                            "is_superuser": "on", "permissions": ["view_user", "delete_unit"]}, status=200)
    assert not schema.User.select().where(schema.User.username == "new").exists()
    post(web, "/user/add", {"username": "new", "password1": "p", "password2": "p", "is_active": "on",
                            "is_superuser": "on", "permissions": ["view_user"]}, status=303)
    new = schema.User.get(schema.User.username == "new")
    assert not new.is_superuser
    assert permissions_of(new) == {"view_user"}


# --- samples and alarms -----------------------------------------------------------------------------------


def test_no_route_changes_a_sample_or_an_alarm(boss):
    unit = make_unit()
    add_samples(unit, 2)
    sample = schema.Sample.select().first()
    alarm = schema.Alarm.create(unit=unit, level=2, data=["a", "b"])
    before = snapshot_database()
    csrf = token(boss)
    change = {"csrf_token": csrf, "timestamp": "2030-01-01 00:00:00", "ch1": "99", "level": "9", "data": "x",
              "unit": str(unit.id)}
    for model, obj in (("sample", sample), ("alarm", alarm)):
        assert boss.get(f"{A}/{model}/add", expect_errors=True).status_int == 404
        for path in (f"/{model}/{obj.id}/", f"/{model}/add", f"/{model}/{obj.id}/change", f"/{model}/{obj.id}/edit"):
            for method in ("POST", "PUT", "PATCH"):
                res = boss.request(A + path, method=method, POST=change, expect_errors=True)
                assert res.status_int in (403, 404, 405), f"{method} {path}: {res.status_int}"
        page = boss.get(f"{A}/{model}/{obj.id}/")
        assert "cannot be changed" in page.text and "<form" not in page.text.split("<main>", 1)[1].split(
            "Delete this", 1)[0].replace('class="inline"', "")
    assert snapshot_database() == before


def test_samples_listed_per_unit_with_dates_and_keyset_pages(boss):
    unit = make_unit()
    add_samples(unit, 120)
    picker = boss.get(A + "/sample/")
    assert 'href="/admin/sample/?unit=M1"' in picker.text
    first = boss.get(A + "/sample/?unit=M1")
    assert "2026-01-01 00:01:59" in first.text and "2026-01-01 00:01:09" not in first.text
    older = re.search(r'href="([^"]+before=[^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = boss.get(older)
    assert "2026-01-01 00:01:09" in second.text and "2026-01-01 00:01:59" not in second.text
    assert "Newer" in second.text
    ranged = boss.get(A + "/sample/", {"unit": "M1", "from": "2026-01-01 00:00:10", "to": "2026-01-01 00:00:12"})
    stamps = re.findall(r"2026-01-01 00:0\d:\d\d", ranged.text.split("<table>", 1)[1])
    assert stamps == ["2026-01-01 00:00:11", "2026-01-01 00:00:10"]
    bad = boss.get(A + "/sample/", {"unit": "M1", "from": "yesterday"})
    assert bad.status_int == 200 and "is not a date" in bad.text
    assert boss.get(A + "/sample/?unit=NOPE", status=404)


def test_bulk_deletion_of_100000_samples_logs_one_entry(boss):
    unit = make_unit()
    keep = make_unit("M2")
    add_samples(unit, 100_000)
    add_samples(keep, 5)
    entries = schema.LogEntry.select().count()
    confirm = boss.get(A + "/sample/delete-all?unit=M1")
    assert "ALL samples" in confirm.text and "M1" in confirm.text
    res = post(boss, "/sample/delete-all?unit=M1", {}, status=303)
    assert "unit=M1" in res.location
    assert schema.Sample.select().where(schema.Sample.unit == unit).count() == 0
    assert schema.Sample.select().where(schema.Sample.unit == keep).count() == 5
    assert schema.LogEntry.select().count() == entries + 1
    entry = latest_log()
    assert entry.action == "delete" and entry.model == "sample"
    assert "100000 sample(s) of unit M1" in entry.change_message
    assert entry.object_repr == "M1 sample at " + str(dt.datetime(2026, 1, 1) + dt.timedelta(seconds=99_999))


def test_delete_old_samples_and_alarms(boss):
    unit = make_unit()
    add_samples(unit, 100)
    res = post(boss, "/sample/delete-old?unit=M1", {"before": "not a date"}, status=200)
    assert "is not a date" in res.text and 'value="not a date"' in res.text
    post(boss, "/sample/delete-old?unit=M1", {"before": "2026-01-01 00:01:00"}, status=303)
    assert schema.Sample.select().count() == 40
    old = schema.Alarm.create(unit=unit, level=1, received=dt.datetime(2020, 1, 1))
    new = schema.Alarm.create(unit=unit, level=1)
    post(boss, "/alarm/delete-old", {"before": "2025-01-01"}, status=303)
    assert [a.id for a in schema.Alarm.select()] == [new.id]
    assert "1 alarm(s) of every unit received before 2025-01-01 00:00:00" in latest_log().change_message
    assert old.id


def test_delete_selected_samples_logs_each_one(boss):
    unit = make_unit()
    add_samples(unit, 10)
    ids = [str(s.id) for s in schema.Sample.select().limit(3)]
    confirm = post(boss, "/sample/delete-selected", {"ids": ids, "back": "/admin/sample/?unit=M1"}, status=200)
    assert "Delete these 3 samples" in confirm.text
    assert schema.Sample.select().count() == 10
    res = post(boss, "/sample/delete-selected", {"ids": ids, "confirm": "yes", "back": "/admin/sample/?unit=M1"},
               status=303)
    assert res.location.endswith("/admin/sample/?unit=M1")
    assert schema.Sample.select().count() == 7
    assert schema.LogEntry.select().where(schema.LogEntry.model == "sample").count() == 3


def test_deletion_switches(settings, database):
    unit = make_unit()
    add_samples(unit, 3)
    alarm = schema.Alarm.create(unit=unit, level=1)
    web = client(settings.replace(ALLOW_SAMPLE_DELETION=False, ALLOW_ALARM_DELETION=False))
    add_user("boss", is_staff=True, is_superuser=True)
    login(web, "boss")
    page = web.get(A + "/sample/?unit=M1")
    assert "Delete ALL" not in page.text and 'name="ids"' not in page.text
    sample = schema.Sample.select().first()
    for path in ("/sample/delete-all?unit=M1", "/sample/delete-old", f"/sample/{sample.id}/delete",
                 "/alarm/delete-all", f"/alarm/{alarm.id}/delete"):
        assert "switched off" in web.get(A + path, status=403).text
        post(web, path, {"before": "2100-01-01"}, status=403)
    post(web, "/sample/delete-selected", {"ids": str(sample.id), "confirm": "yes"}, status=403)
    # Nor does deleting the unit take its samples with it.
    assert "deleting samples is switched off" in post(web, f"/unit/{unit.id}/delete", {}, status=200).text
    assert schema.Sample.select().count() == 3 and schema.Alarm.select().count() == 1 and schema.Unit.select().count() == 1


# --- forms: errors next to the field, input kept, text escaped --------------------------------------------


def test_validation_errors_keep_the_input(boss):
    make_unit()
    res = post(boss, "/unit/add", unit_form(code="M1", name='<script>alert("x")</script>', channels="99",
                                            labels="bad label"), status=200)
    text = res.text
    assert "Please correct the errors below" in text
    assert re.search(r'id="error-code"[^>]*>Another unit already has the code', text)
    assert re.search(r'id="error-channels"[^>]*>Enter a number from 1 to 32', text)
    assert 'value="&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;"' in text
    assert "<script>alert" not in text
    assert 'value="99"' in text and 'value="bad label"' in text
    assert schema.Unit.select().count() == 1


def test_user_names_are_escaped_in_lists(boss):
    add_user("<b>bold</b>")
    page = boss.get(A + "/user/")
    assert "&lt;b&gt;bold&lt;/b&gt;" in page.text and "<b>bold</b>" not in page.text


def test_the_log_records_what_changed_and_cannot_be_edited(boss):
    unit = make_unit()
    form = unit_form(code="M1", name="Old name", key="k1")
    post(boss, f"/unit/{unit.id}/", form, status=303)
    post(boss, f"/unit/{unit.id}/", {**form, "name": "New name", "key": "other"}, status=303)
    entry = latest_log()
    assert entry.username == "boss" and entry.object_repr == "M1 (New name)"
    assert "Name from 'Old name' to 'New name'" in entry.change_message
    assert entry.change_message.startswith("Changed Unit key;") and "other" not in entry.change_message
    page = boss.get(A + "/logentry/", {"model": "unit", "user": "boss"})
    assert "New name" in page.text
    assert "New name" not in boss.get(A + "/logentry/", {"model": "user"}).text
    detail = boss.get(f"{A}/logentry/{entry.id}/")
    assert 'href="/admin/unit/%d/"' % unit.id in detail.text and "<form" not in detail.text.split("<main>")[1]
    before = schema.LogEntry.select().count()
    for path in (f"/logentry/{entry.id}/", "/logentry/add", f"/logentry/{entry.id}/delete"):
        res = boss.post(A + path, {"csrf_token": token(boss), "change_message": "x"}, expect_errors=True)
        assert res.status_int in (404, 405)
    assert schema.LogEntry.select().count() == before and latest_log().change_message == entry.change_message


# --- users ------------------------------------------------------------------------------------------------


def test_change_password_form(boss):
    user = add_user("ann", is_staff=True)
    page = boss.get(f"{A}/user/{user.id}/")
    assert f'href="/admin/user/{user.id}/password"' in page.text and "Change password form" in page.text
    res = post(boss, f"/user/{user.id}/password", {"password1": "abc", "password2": "abd"}, status=200)
    assert "The two passwords differ" in res.text
    res = post(boss, f"/user/{user.id}/password", {"password1": "abc", "password2": "abc"}, status=303)
    follow = res.follow()
    assert "weak" in follow.text and "was changed" in follow.text
    assert check_password("abc", schema.User.get_by_id(user.id).password)
    assert latest_log().change_message == "Changed password."


def test_a_password_change_logs_the_user_out_everywhere_else(settings, boss):
    ann = add_user("ann", is_staff=True, is_superuser=True)
    anns_browser = client(settings)
    login(anns_browser, "ann")
    bosses_other_browser = client(settings)
    login(bosses_other_browser, "boss")
    post(boss, f"/user/{ann.id}/password", {"password1": "Long-enough-1", "password2": "Long-enough-1"}, status=303)
    assert "/login" in anns_browser.get(A + "/", status=303).location
    me = schema.User.get(schema.User.username == "boss")
    post(boss, f"/user/{me.id}/password", {"password1": "Long-enough-2", "password2": "Long-enough-2"}, status=303)
    assert boss.get(A + "/").status_int == 200  # the page the change was made on stays logged in
    assert "/login" in bosses_other_browser.get(A + "/", status=303).location


def test_last_superuser_and_own_account(web):
    schema.User.update(is_superuser=False).where(schema.User.id == 1).execute()
    me = add_user("boss", is_staff=True, is_superuser=True)
    login(web, "boss")
    assert "last active superuser" in web.get(f"{A}/user/{me.id}/delete").text
    assert "last active superuser" in post(web, f"/user/{me.id}/delete", {}, status=200).text
    values = page_values(web.get(f"{A}/user/{me.id}/").text)
    values.pop("is_superuser")
    res = post(web, f"/user/{me.id}/", values, status=200)
    assert "This is the last active superuser" in res.text and "Tick this box to confirm" in res.text
    assert schema.User.get_by_id(me.id).is_superuser

    add_user("second", is_staff=True, is_superuser=True)
    res = post(web, f"/user/{me.id}/", values, status=200)  # no longer the last, but still oneself
    assert "Tick this box to confirm" in res.text and "last active superuser" not in res.text
    confirm = web.get(f"{A}/user/{me.id}/delete")
    assert "YOUR OWN account" in confirm.text
    assert "Tick the box" in post(web, f"/user/{me.id}/delete", {}, status=200).text
    res = post(web, f"/user/{me.id}/delete", {"confirm_self": "on"}, status=303)
    assert res.location.endswith("/login")
    assert not schema.User.select().where(schema.User.id == me.id).exists()


# --- alarm messages -----------------------------------------------------------------------------------------


def test_alarm_message_broken_template_refused_and_preview(boss):
    unit = make_unit()
    res = post(boss, "/alarmmessage/add", {"unit": str(unit.id), "level": "2", "subject": "Alarm {% if level %}",
                                           "body": "ok"}, status=200)
    assert re.search(r'id="error-subject"[^>]*>The template does not work: line 1', res.text)
    assert 'value="Alarm {% if level %}"' in res.text
    assert not schema.AlarmMessage.select().exists()
    res = post(boss, "/alarmmessage/preview", {"unit": str(unit.id), "level": "2",
                                               "subject": "{{ unit.name }} at level {{ level }}",
                                               "body": "{% if data.0 %}Time {{ data.0 }}{% endif %}, "
                                                       "value {{ data.1 }}",
                                               "sample_data": "2026-05-01 10:00:00, 12.5"}, status=200)
    preview = res.text.split('id="preview"', 1)[1]
    assert "Mill at level 2" in preview and "Time 2026-05-01 10:00:00, value 12.5" in preview
    assert not schema.AlarmMessage.select().exists()  # previewing saves nothing


# --- a change to a unit's key reaches the TTP server at the next request ----------------------------------------


def test_unit_key_change_in_the_panel_reaches_the_ttp_server(boss, settings):
    from txm.client import TTPClient
    from txm.serve import ServerThread

    unit = make_unit(key="old-key")
    schema.database.close()
    with ServerThread(settings.replace(DS_PORT=0, BIND_ADDRESS="127.0.0.1"), timeout=10,
                      module_services=False) as server, TTPClient(port=server.ttp_port, timeout=10) as meter:
        assert meter.request("TTP /up/M1/<2026-1-1 0:0:1;1;2;3> old-key") == "OK"
        with schema.database.connection_context():
            form = page_values(boss.get(f"{A}/unit/{unit.id}/").text)
            post(boss, f"/unit/{unit.id}/", {**form, "key": "new-key"}, status=303)
        assert meter.request("TTP /up/M1/<2026-1-1 0:0:2;1;2;3> old-key") == "402 Unauthorized"
        assert meter.request("TTP /up/M1/<2026-1-1 0:0:3;1;2;3> new-key") == "OK"


# --- alarm messages: a test email through a real SMTP server ---------------------------------------------------


class Inbox:
    """An aiosmtpd handler keeping every message it receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, envelope.content.decode("utf-8", "replace")))
        return "250 OK"


@pytest.fixture
def smtp():
    """A real SMTP server on a port the system chose; yields (port, inbox)."""
    import socket

    from aiosmtpd.controller import Controller

    class SocketController(Controller):
        def __init__(self, handler, sock):
            self._sock = sock
            super().__init__(handler, hostname="127.0.0.1", port=sock.getsockname()[1])

        def _create_server(self):
            return self.loop.create_server(self._factory_invoker, sock=self._sock)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    inbox = Inbox()
    controller = SocketController(inbox, sock)
    controller.start()
    yield controller.port, inbox
    controller.stop()


def test_send_a_test_email(settings, database, smtp):
    port, inbox = smtp
    web = client(settings.replace(EMAIL_HOST="127.0.0.1", EMAIL_PORT=port))
    add_user("boss", is_staff=True, is_superuser=True, email="boss@example.com")
    login(web, "boss")
    unit = make_unit()
    ml = schema.MailingList.create(unit=unit)
    schema.MailingListMember.create(mailing_list=ml, user=schema.User.get(schema.User.username == "boss"))
    msg = schema.AlarmMessage.create(unit=unit, level=4, subject="{{ unit.name }} alarm {{ level }}",
                                     body="Value {{ data.1 }}")
    page = web.get(f"{A}/alarmmessage/{msg.id}/")
    assert 'name="recipients" value="boss@example.com"' in page.text  # from the mailing list
    res = post(web, f"/alarmmessage/{msg.id}/test-email", {"recipients": "ops@example.com",
                                                           "data": "2026-01-01 00:00:00, 7.5"}, status=303)
    assert "A test email was sent to ops@example.com" in res.follow().text
    (rcpts, content), = inbox.messages
    assert rcpts == ["ops@example.com"]
    assert "Subject: Mill alarm 4" in content and "Value 7.5" in content

    down = client(settings.replace(EMAIL_HOST="127.0.0.1", EMAIL_PORT=1, EMAIL_TIMEOUT=2.0))
    login(down, "boss")
    res = post(down, f"/alarmmessage/{msg.id}/test-email", {"recipients": "ops@example.com"}, status=303)
    assert "The test email was not sent: Cannot reach the SMTP server" in res.follow().text


def test_unit_page_leads_to_its_mailing_list_and_history(boss):
    unit = make_unit()
    other = make_unit("M2")
    post(boss, f"/unit/{other.id}/", unit_form(code="M2", name="Other"), status=303)
    page = boss.get(f"{A}/unit/{unit.id}/")
    add = re.search(r'href="(/admin/mailinglist/add\?unit=\d+)"', page.text).group(1)
    form = boss.get(add)
    assert f'<option value="{unit.id}" selected>' in form.text
    post(boss, "/mailinglist/add", {"unit": str(unit.id), "members": ["1"]}, status=303)
    ml = schema.MailingList.get()
    assert f'href="/admin/mailinglist/{ml.id}/"' in boss.get(f"{A}/unit/{unit.id}/").text
    post(boss, f"/unit/{unit.id}/", unit_form(code="M1", name="Renamed"), status=303)
    history = boss.get(A + "/logentry/", {"model": "unit", "object": str(unit.id)})
    assert "Renamed" in history.text and "Other" not in history.text


def test_view_and_delete_one_sample_and_one_alarm(boss):
    unit = make_unit()
    add_samples(unit, 2)
    sample = schema.Sample.select().order_by(schema.Sample.timestamp).first()
    alarm = schema.Alarm.create(unit=unit, level=5, data=["2026-01-01 00:00:00", "<b>9</b>"], email_status="failed",
                                email_error="550 no such user")
    page = boss.get(f"{A}/sample/{sample.id}/")
    assert "2026-01-01 00:00:00" in page.text and "Delete this sample" in page.text
    assert "Are you sure" in boss.get(f"{A}/sample/{sample.id}/delete").text
    res = post(boss, f"/sample/{sample.id}/delete", {}, status=303)
    assert res.location.endswith("/admin/sample/?unit=M1")
    assert schema.Sample.select().count() == 1
    assert latest_log().object_repr == "M1 sample at 2026-01-01 00:00:00"

    listing = boss.get(A + "/alarm/", {"unit": "M1"})
    assert f'href="/admin/alarm/{alarm.id}/"' in listing.text and "&lt;b&gt;9&lt;/b&gt;" in listing.text
    assert "No alarms" in boss.get(A + "/alarm/", {"unit": "M1", "to": "2000-01-01"}).text
    detail = boss.get(f"{A}/alarm/{alarm.id}/")
    assert "550 no such user" in detail.text and "data.1 = &lt;b&gt;9&lt;/b&gt;" in detail.text
    post(boss, f"/alarm/{alarm.id}/delete", {}, status=303)
    assert not schema.Alarm.select().exists()
    assert latest_log().model == "alarm" and latest_log().action == "delete"
    assert boss.get(f"{A}/alarm/{alarm.id}/", status=404)


def quarantine(n: int, **fields) -> schema.QuarantinedRecord:
    values = {"server": "logger.example:1200", "format": "standard", "station": "Lgr", "table_name": "T",
              "record_number": str(n), "reason": f"field V (FLOAT) holds 'x{n}', not a number", "acknowledged": True,
              "digest": f"{n:064d}", "raw": f'"Lgr","T","2026-05-01 10:00:00","{n}","V","FLOAT","<b>x{n}</b>"'}
    values.update(fields)
    return schema.QuarantinedRecord.create(**values)


def test_quarantined_loggernet_records_are_listed_shown_and_deleted(boss):
    first = quarantine(1)
    second = quarantine(2, station="Other", acknowledged=False, record_number="", table_name="")
    third = quarantine(3)
    index = boss.get(A + "/")
    assert "Quarantined records" in index.text and "LoggerNet client could not store" in index.text and 'href="/admin/quarantinedrecord/"' in index.text
    listing = boss.get(A + "/quarantinedrecord/")
    assert all(f'href="/admin/quarantinedrecord/{q.id}/"' in listing.text for q in (first, second, third))
    assert listing.text.index(f"/quarantinedrecord/{third.id}/") < listing.text.index(f"/quarantinedrecord/{first.id}/")
    narrowed = boss.get(A + "/quarantinedrecord/", {"station": "Other"})
    assert f"/quarantinedrecord/{second.id}/" in narrowed.text and f"/quarantinedrecord/{first.id}/" not in narrowed.text
    detail = boss.get(f"{A}/quarantinedrecord/{first.id}/")
    assert "&#34;Lgr&#34;,&#34;T&#34;" in detail.text or "&quot;Lgr&quot;,&quot;T&quot;" in detail.text
    assert "&lt;b&gt;x1&lt;/b&gt;" in detail.text and "<b>x1</b>" not in detail.text  # the raw text, escaped
    assert "not a number" in detail.text and "logger.example:1200" in detail.text and "Delete this record" in detail.text
    assert "names no record" in boss.get(f"{A}/quarantinedrecord/{second.id}/").text
    # no add or change: the record stays as it arrived
    boss.get(A + "/quarantinedrecord/add", status=404)
    assert "<form" not in detail.text.split("<main>")[1].split("Delete this record")[0]

    res = post(boss, f"/quarantinedrecord/{first.id}/delete", {}, status=303)
    assert res.location.endswith("/admin/quarantinedrecord/")
    assert latest_log().model == "quarantinedrecord" and latest_log().object_repr == "LoggerNet record Lgr/T 1"
    post(boss, "/quarantinedrecord/delete-selected", {"ids": [second.id, third.id], "confirm": "yes",
                                                      "back": A + "/quarantinedrecord/"}, status=303)
    assert not schema.QuarantinedRecord.select().exists()
    boss.get(f"{A}/quarantinedrecord/{first.id}/", status=404)
    boss.get(A + "/quarantinedrecord/delete-all", status=404)  # "delete all" goes unit by unit: not for these


def test_quarantined_records_need_their_permissions(web):
    record = quarantine(1)
    clerk = add_user("clerk", is_staff=True)
    login(web, "clerk")
    web.get(A + "/quarantinedrecord/", status=403)
    schema.UserPermission.create(user=clerk, codename="view_quarantinedrecord")
    assert "Delete this record" not in web.get(f"{A}/quarantinedrecord/{record.id}/").text
    post(web, f"/quarantinedrecord/{record.id}/delete", {}, status=403)
    schema.UserPermission.create(user=clerk, codename="delete_quarantinedrecord")
    post(web, f"/quarantinedrecord/{record.id}/delete", {}, status=303)
    assert not schema.QuarantinedRecord.select().exists()
