"""Attacks on the web interface and the admin panel, reproduced against the real apps."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from tests.test_admin_web import admin_routes, objects_of_every_model, snapshot_database
from tests.test_adminpanel import add_samples
from tests.webutil import add_user, client, csrf_token, login
from txm.db import schema
from txm.permissions import permissions_of
from txm.serve import make_site
from txm.webcore import safe_next

A = "/admin"


def panel_token(web) -> str:
    return csrf_token(web.get(A + "/"))


def every_user_row() -> dict:
    """The tables a change of a user touches, beyond those ``snapshot_database`` reads."""
    return {**snapshot_database(),
            **{model.__name__: sorted(tuple(sorted((k, str(v)) for k, v in row.items()))
                                      for row in model.select().dicts())
               for model in (schema.UserGroup, schema.UserUnit, schema.LoginFailure, schema.LogEntry)}}


# --- 11: a staff user never takes over a more powerful one -------------------------------------------

TAKEN = "Taken-over-1"
CLERK_PERMISSIONS = ("view_user", "add_user", "change_user", "delete_user")


@pytest.fixture
def clerk(settings, database):
    """A browser logged in as a staff user who holds every permission on users, and nothing else."""
    user = add_user("clerk", is_staff=True)
    for codename in CLERK_PERMISSIONS:
        schema.UserPermission.create(user=user, codename=codename)
    web = client(settings)
    login(web, "clerk")
    return web


def more_powerful_users() -> list[schema.User]:
    """Users holding something the clerk does not, each in another way."""
    secret_unit = schema.Unit.create(code="SECRET", key="k", channels=1)
    chief = add_user("chief", is_staff=True)  # staff, with permissions the clerk lacks
    for codename in ("view_user", "change_unit", "delete_sample"):
        schema.UserPermission.create(user=chief, codename=codename)
    sleeper = add_user("sleeper", is_staff=True, is_active=False)  # powerful once made active again
    schema.UserPermission.create(user=sleeper, codename="delete_unit")
    seer = add_user("seer")  # not staff, but sees a unit the clerk does not
    schema.UserUnit.create(user=seer, unit=secret_unit)
    member = add_user("member")  # a permission through a group
    group = schema.Group.create(name="Unit removers")
    schema.GroupPermission.create(group=group, codename="delete_unit")
    schema.UserGroup.create(user=member, group=group)
    boss = add_user("boss", is_staff=True, is_superuser=True)
    return [chief, sleeper, seer, member, boss]


def takeover_form(token: str, user: schema.User) -> dict:
    """What a clerk posts to take a user over: a password they know, the account kept usable."""
    return {"csrf_token": token, "password1": TAKEN, "password2": TAKEN, "username": user.username,
            "email": "clerk@evil.example", "is_active": "on", "is_staff": "on", "confirm": "yes",
            "confirm_self": "on", "permissions": list(CLERK_PERMISSIONS)}


def test_no_route_of_the_panel_lets_a_staff_user_take_over_a_more_powerful_one(settings, clerk):
    ids = objects_of_every_model()
    targets = more_powerful_users()
    token = panel_token(clerk)
    before = every_user_row()
    tried = set()
    for target in targets:
        routes = admin_routes(make_site(settings), {**ids, "user": target.id})["user"]
        own = [(method, path) for method, path in routes if f"/user/{target.id}/" in path]
        assert ("POST", f"/user/{target.id}/password") in own and ("POST", f"/user/{target.id}/delete") in own
        for method, path in own:
            tried.add((method, path.replace(str(target.id), "<id>")))
            if method == "GET":
                res = clerk.get(A + path, expect_errors=True)
                if path == f"/user/{target.id}/":  # viewing is allowed, read-only
                    assert res.status_int == 200, f"GET {path}: {res.status}"
                    assert "not change it" in res.text and 'name="_save"' not in res.text, target.username
                    assert f"/user/{target.id}/password" not in res.text
                else:
                    assert res.status_int == 403, f"GET {path} of {target.username}: {res.status}"
            else:
                res = clerk.post(A + path, takeover_form(token, target), expect_errors=True)
                assert res.status_int == 403, f"POST {path} of {target.username}: {res.status}\n{res.text[-1500:]}"
        assert every_user_row() == before, f"a route changed {target.username}"
    assert len(tried) >= 5, tried
    for target in targets:  # and nobody logs in with the clerk's password
        login(client(settings, address="192.0.2.99"), target.username, TAKEN, status=401)


def test_only_a_superuser_sets_another_staff_members_password_or_staff_status(settings, clerk):
    peer = add_user("peer", is_staff=True)  # holds less than the clerk, but is staff
    schema.UserPermission.create(user=peer, codename="view_user")
    token = panel_token(clerk)
    assert clerk.get(f"{A}/user/{peer.id}/password", status=403)
    clerk.post(f"{A}/user/{peer.id}/password", {"csrf_token": token, "password1": TAKEN, "password2": TAKEN},
               status=403)
    # Their other details the clerk may change; the staff status stays as it was.
    res = clerk.post(f"{A}/user/{peer.id}/", {"csrf_token": token, "username": "peer", "email": "p@example.com",
                                              "is_active": "on", "permissions": ["view_user"]}, status=303)
    assert res.location.endswith("/admin/user/")
    peer = schema.User.get_by_id(peer.id)
    assert peer.email == "p@example.com" and peer.is_staff
    login(client(settings, address="192.0.2.99"), "peer", TAKEN, status=401)

    # A user who is not staff and holds no more than the clerk: the clerk may set the password.
    junior = add_user("junior")
    clerk.post(f"{A}/user/{junior.id}/password", {"csrf_token": token, "password1": TAKEN, "password2": TAKEN},
               status=303)
    login(client(settings, address="192.0.2.99"), "junior", TAKEN)


def test_a_staff_user_hands_out_only_units_they_see(settings, clerk):
    secret = schema.Unit.create(code="SECRET", key="k", channels=1)
    me = schema.User.get(schema.User.username == "clerk")
    junior = add_user("junior")
    token = panel_token(clerk)
    for user in (me, junior):
        res = clerk.post(f"{A}/user/{user.id}/", {"csrf_token": token, "username": user.username, "is_active": "on",
                                                  "is_staff": "on" if user.is_staff else "",
                                                  "permissions": list(CLERK_PERMISSIONS) if user == me else [],
                                                  "units": [str(secret.id)]}, expect_errors=True)
        assert res.status_int == 200 and "not a choice" in res.text, (user.username, res.status)
    assert not schema.UserUnit.select().exists()
    assert permissions_of(me) == set(CLERK_PERMISSIONS)


# --- 14: numbers out of range in the panel's addresses -------------------------------------------------

HUGE = ("99999999999999999999", "-99999999999999999999", str(2 ** 63), str(-2 ** 63 - 1))


@pytest.fixture
def boss(settings, database):
    add_user("boss", is_staff=True, is_superuser=True)
    web = client(settings)
    login(web, "boss")
    unit = schema.Unit.create(code="M1", key="k", channels=3)
    add_samples(unit, 3)
    schema.Alarm.create(unit=unit, level=1)
    return web


@pytest.mark.parametrize("cursor", ["before", "after"])
@pytest.mark.parametrize("listing", ["/alarm/?", "/alarm/?unit=M1&", "/logentry/?", "/sample/?unit=M1&"])
def test_a_page_cursor_out_of_range_answers_400(boss, listing, cursor):
    for number in HUGE + ("2026-01-01 00:00:0x", "12:00"):
        res = boss.get(f"{A}{listing}{cursor}={number}", expect_errors=True)
        assert res.status_int == 400, f"{listing}{cursor}={number}: {res.status}"
        text = html.unescape(res.text)
        assert re.search(rf"Page: '{re.escape(number)}' is not an? (alarm|log entry|date)", text), text[-800:]
    valid = "2026-01-01 00:00:01" if "sample" in listing else "1"
    assert boss.get(f"{A}{listing}{cursor}={valid}").status_int == 200


@pytest.mark.parametrize("model", ["alarm", "sample", "logentry", "user", "unit", "group", "view"])
def test_an_id_out_of_range_answers_404(boss, model):
    for number in HUGE:
        res = boss.get(f"{A}/{model}/{number}/", expect_errors=True)
        assert res.status_int == 404, f"/{model}/{number}/: {res.status}"
    assert boss.get(f"{A}/user/{HUGE[0]}/password", expect_errors=True).status_int == 404
    assert boss.get(f"{A}/sample/{HUGE[0]}/delete", expect_errors=True).status_int == 404


# --- 15: back= and next= stay on this site ----------------------------------------------------------------

C0_OR_SPACE = "".join(chr(c) for c in range(0x21))


def as_browser_reads(value: str) -> str:
    """A URL as the WHATWG URL parser first reads it for http(s): leading and trailing C0 controls and
    spaces stripped, every tab and newline removed, a backslash taken for a slash."""
    value = value.strip(C0_OR_SPACE)
    for c in "\t\n\r":
        value = value.replace(c, "")
    return value.replace("\\", "/")


def leaves_the_site(value: str) -> bool:
    """Would a browser on this site follow ``value`` to another host (or another scheme)?"""
    read = as_browser_reads(value)
    return read.startswith("//") or bool(re.match(r"[A-Za-z][A-Za-z0-9+.\-]*:", read))


HOSTILE = ["//evil.example/", "///evil.example/", "/\t//evil.example/", "/\n//evil.example", "/\r//evil.example",
           "/\t/evil.example/", "/\n/evil.example", "/\t\t/\\evil.example", "\\\\evil.example", "/\\evil.example",
           "\\/evil.example", " //evil.example", "\t//evil.example", "\x00//evil.example", "\x01/\t/evil.example",
           "https://evil.example/", "https:evil.example", "javascript:alert(1)", "/\r\n/\\evil.example"]
HARMLESS = ["/admin/sample/?unit=M1", "/units/M1/?range=day", "/a//b", "/%09/evil.example/", "/%2F/evil.example",
            "/?next=//evil.example"]


def test_the_hostile_values_really_leave_the_site_in_chromium(browser):
    """The oracle the tests use, checked against a real browser's URL parser."""
    page = browser.new_page()
    base = "http://site.example/admin/sample/"
    hosts = page.evaluate("([values, base]) => values.map(v => { try { return new URL(v, base).host } "
                          "catch (e) { return null } })", [HOSTILE + HARMLESS, base])
    for value, host in zip(HOSTILE + HARMLESS, hosts):
        assert (host != "site.example") == (value in HOSTILE) == leaves_the_site(value), (value, host)


@pytest.mark.parametrize("value", HOSTILE)
def test_safe_next_refuses_what_a_browser_would_take_off_site(value):
    assert safe_next(value, "/default/") == "/default/"


@pytest.mark.parametrize("value", HARMLESS)
def test_safe_next_keeps_a_path_on_this_site(value):
    assert safe_next(value, "/default/") == value


@hypothesis_settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="/\\\t\n\r \x00\x01\x0b\x1fe.:@%?#", max_size=12))
def test_no_value_safe_next_accepts_leaves_the_site(value):
    accepted = safe_next(value, "/default/")
    assert accepted.startswith("/") and not leaves_the_site(accepted)
    if accepted != "/default/":  # what is accepted is where the browser would have gone
        assert accepted == as_browser_reads(value)


def test_admin_back_stays_on_this_site(boss):
    token = panel_token(boss)
    ids = [str(s.id) for s in schema.Sample.select()]
    for value in HOSTILE:
        confirm = boss.post(A + "/sample/delete-selected", {"csrf_token": token, "ids": ids, "back": value})
        links = re.findall(r'href="([^"]*)"', confirm.text) + re.findall(r'name="back" value="([^"]*)"', confirm.text)
        assert "/admin/sample/" in links and not any(leaves_the_site(link) for link in links), (value, links)
        wrong = boss.post(A + "/sample/delete-selected", {"csrf_token": token, "ids": "x", "back": value}, status=303)
        assert wrong.location == "http://localhost:80/admin/sample/", (value, wrong.location)
    assert schema.Sample.select().count() == 3


def test_login_next_stays_on_this_site(settings, database):
    add_user("ann")
    for value in HOSTILE:
        web = client(settings)
        form = web.get("/login", params={"next": value})
        assert re.search(r'name="next" value="([^"]*)"', form.text).group(1) == "/", value
        res = web.post("/login", {"username": "ann", "password": "pass word 1", "next": value,
                                  "csrf_token": csrf_token(form)}, status=303)
        assert res.location == "http://localhost:80/", (value, res.location)
        assert web.get("/login", params={"next": value}, status=303).location == "http://localhost:80/"
        page = web.get("/password", params={"next": value})
        assert re.search(r'name="next" value="([^"]*)"', page.text).group(1) == "/", value
