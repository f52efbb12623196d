"""Attacks on the web interface and the admin panel, reproduced against the real apps.

* one staff user taking over another, more powerful one through any route of the panel;
* a stranger's wrong passwords locking the owner of a user name out (web login and API);
* out-of-range numbers in the panel's addresses (an answer of 400 or 404, never 500);
* ``back=`` and ``next=`` values that a browser would follow to another site.

The panel's routes are walked from its own route table (``admin_routes``), so a route added
later is checked too.
"""

from __future__ import annotations

import base64
import html
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.admin.routes import admin_routes, objects_of_every_model, snapshot_database
from tests.conftest import database_values, write_toml
from tests.samples import add_samples
from tests.webutil import add_user, client, csrf_token, login
from txm.db import schema
from txm.permissions import permissions_of
from txm.serve import make_site
from txm.webcore import LOGIN_FAILURES_PER_ADDRESS, LOGIN_FAILURES_PER_USER, safe_next

A = "/admin"
STRANGER = "203.0.113.66"
OWNER = "198.51.100.7"


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


GROUP_CLERK_PERMISSIONS = ("view_group", "change_group", "delete_group", "view_user")


def test_no_route_of_the_panel_lets_a_staff_user_strip_a_group_that_gives_more_than_they_hold(settings, database):
    """Taking a permission away from a group, renaming or deleting it takes rights from its
    members: a staff user who may change groups does so only for groups that give no more than
    they hold themselves, through every route of the group."""
    ids = objects_of_every_model()
    secret = schema.Unit.create(code="SECRET", key="k", channels=1)
    clerk_user = add_user("gclerk", is_staff=True)
    for codename in GROUP_CLERK_PERMISSIONS:
        schema.UserPermission.create(user=clerk_user, codename=codename)
    removers = schema.Group.create(name="Unit removers")  # gives a permission the clerk lacks
    schema.GroupPermission.create(group=removers, codename="delete_unit")
    watchers = schema.Group.create(name="Watchers")  # lets its members see a unit the clerk does not
    schema.GroupUnit.create(group=watchers, unit=secret)
    chiefs = schema.Group.create(name="Chiefs")  # gives nothing more, but one member holds more
    schema.GroupPermission.create(group=chiefs, codename="view_user")
    chief = add_user("chief", is_staff=True)
    schema.UserPermission.create(user=chief, codename="change_unit")
    schema.UserGroup.create(user=chief, group=chiefs)
    clerk = client(settings)
    login(clerk, "gclerk")
    token = panel_token(clerk)
    before = every_user_row()
    for group in (removers, watchers, chiefs):
        routes = admin_routes(make_site(settings), {**ids, "group": group.id})["group"]
        own = [(method, path) for method, path in routes if f"/group/{group.id}/" in path]
        assert ("POST", f"/group/{group.id}/delete") in own and ("POST", f"/group/{group.id}/") in own
        for method, path in own:
            if method == "GET":
                res = clerk.get(A + path, expect_errors=True)
                if path == f"/group/{group.id}/":  # viewing is allowed, read-only, with the reason
                    assert res.status_int == 200 and "only a superuser may change or delete the group" in res.text.lower()
                    assert 'name="_save"' not in res.text, group.name
                else:
                    assert res.status_int == 403, f"GET {path} of {group.name}: {res.status}"
            else:
                form = {"csrf_token": token, "name": "Stripped", "permissions": [], "units": [], "confirm": "yes"}
                res = clerk.post(A + path, form, expect_errors=True)
                assert res.status_int == 403, f"POST {path} of {group.name}: {res.status}\n{res.text[-1500:]}"
        assert every_user_row() == before, f"a route changed the group {group.name}"

    # A group that gives no more than the clerk holds, with members who hold no more: changed.
    plain = schema.Group.create(name="Plain")
    schema.GroupPermission.create(group=plain, codename="view_user")
    schema.UserGroup.create(user=add_user("junior"), group=plain)
    clerk.post(f"{A}/group/{plain.id}/", {"csrf_token": token, "name": "Plainer", "permissions": []}, status=303)
    assert schema.Group.get_by_id(plain.id).name == "Plainer"
    assert not schema.GroupPermission.select().where(schema.GroupPermission.group == plain).exists()


# --- 12: wrong passwords lock out the one who types them, not the owner -----------------------------


def basic(username: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def test_a_strangers_wrong_passwords_do_not_lock_the_owner_out_of_the_pages(settings, database):
    add_user("ann")
    stranger = client(settings, address=STRANGER)
    for _ in range(LOGIN_FAILURES_PER_USER + 2):
        login(stranger, "ann", "guess", status=401)
    # From the stranger's address even the right password is refused: guessing stops there ...
    assert "Too many failed logins" in login(stranger, "ann", status=401).text
    # ... while the owner, elsewhere, logs in, and that does not lift the stranger's lock.
    login(client(settings, address=OWNER), "ann")
    assert "Too many failed logins" in login(client(settings, address=STRANGER), "ann", status=401).text


def test_a_strangers_wrong_passwords_do_not_lock_the_owner_out_of_the_api(settings, database):
    add_user("ann")
    stranger = client(settings, address=STRANGER)
    for _ in range(LOGIN_FAILURES_PER_USER + 2):
        stranger.get("/api/units", headers=basic("ann", "guess"), status=401)
    res = stranger.get("/api/units", headers=basic("ann", "pass word 1"), status=401)
    assert "Too many failed logins" in res.json["error"]
    owner = client(settings, address=OWNER)  # a web process of its own: nothing cached
    assert owner.get("/api/units", headers=basic("ann", "pass word 1")).json == {"units": []}


def test_one_address_cannot_guess_endlessly_at_many_names(settings, database):
    add_user("ann")
    stranger = client(settings, address=STRANGER)
    for i in range(LOGIN_FAILURES_PER_ADDRESS):
        login(stranger, f"name{i % 7}", "guess", status=401)
    assert "Too many failed logins" in login(stranger, "ann", status=401).text
    login(client(settings, address=OWNER), "ann")


def test_the_panel_shows_failed_logins_and_unlocks_a_user(settings, database):
    ann = add_user("ann")
    stranger = client(settings, address=STRANGER)
    for _ in range(LOGIN_FAILURES_PER_USER):
        login(stranger, "ann", "guess", status=401)
    login(stranger, "bob", "guess", status=401)  # another name's failure stays
    add_user("boss", is_staff=True, is_superuser=True)
    boss = client(settings)
    login(boss, "boss")
    page = boss.get(f"{A}/user/{ann.id}/")
    failures = page.text.split('id="login-failures"', 1)[1].split("</section>", 1)[0]
    assert STRANGER in failures and "locked" in failures and f"{LOGIN_FAILURES_PER_USER} failed" in failures
    res = boss.post(f"{A}/user/{ann.id}/unlock", {"csrf_token": csrf_token(page)}, status=303)
    assert res.location.endswith(f"/admin/user/{ann.id}/")
    assert f"Cleared {LOGIN_FAILURES_PER_USER} failed login(s) of ann" in res.follow().text
    entry = schema.LogEntry.select().order_by(schema.LogEntry.id.desc()).first()
    assert (entry.action, entry.model, entry.object_id) == ("change", "user", str(ann.id))
    assert entry.change_message == f"Cleared {LOGIN_FAILURES_PER_USER} failed login(s)."
    assert [f.username for f in schema.LoginFailure.select()] == ["bob"]
    login(client(settings, address=STRANGER), "ann")  # the right password works again from there
    assert 'id="login-failures"' in boss.get(f"{A}/user/{ann.id}/").text


def test_txm_user_unlock(settings, database, run_cli):
    add_user("ann")
    stranger = client(settings, address=STRANGER)
    for _ in range(LOGIN_FAILURES_PER_USER):
        login(stranger, "ANN", "guess", status=401)  # counted whatever the case typed
    assert "Too many failed logins" in login(stranger, "ann", status=401).text
    result = run_cli("user", "unlock", "ann")
    assert f"Cleared {LOGIN_FAILURES_PER_USER} failed login(s) of 'ann'" in result.output
    login(client(settings, address=STRANGER), "ann")
    assert "Cleared 0 failed login(s)" in run_cli("user", "unlock", "ann").output
    assert "no user named 'ghost'" in run_cli("user", "unlock", "ghost", expect=1).output.lower()
    help_text = run_cli("user", "unlock", "-h").output
    assert "Example:" in help_text and "txm user unlock" in help_text


class Browser:
    """A urllib client with cookies that does not follow redirects (a script against a real server)."""

    def __init__(self, base: str):
        self.base = base
        self.cookies = http.cookiejar.CookieJar()

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args, **kwargs):
                return None

        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies), NoRedirect)

    def request(self, path: str, data: dict | None = None, headers: dict | None = None) -> tuple[int, str]:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        req = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(req, timeout=20) as res:
                return res.status, res.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def login(self, username: str, password: str) -> int:
        _, page = self.request("/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
        return self.request("/login", {"username": username, "password": password, "next": "/",
                                       "csrf_token": token})[0]


def test_failed_logins_and_lockouts_are_logged_by_txm_serve(serve_process, settings, config_file, database):
    add_user("ann")
    schema.database.close()
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    process = serve_process()
    site = Browser(f"http://127.0.0.1:{process.web_port()}")
    secret = "Wrong-secret-%d"
    for i in range(LOGIN_FAILURES_PER_USER - 1):
        assert site.login("ann", secret % i) == 401
    status, _ = site.request("/api/units", headers=basic("ann", secret % 99))
    assert status == 401  # the last failure allowed, through the API
    assert site.login("ann", "pass word 1") == 401  # refused: locked
    assert process.stop() == 0
    log = process.logged()
    failed = [line for line in log.splitlines() if ": failed login for " in line]
    assert len(failed) == LOGIN_FAILURES_PER_USER, log
    assert all(" WARNING txm.web: " in line and "'ann'" in line and "127.0.0.1" in line for line in failed), failed
    assert re.search(r"WARNING txm\.web: user name 'ann' locked out at 127\.0\.0\.1 for 15 minutes after 5 failed "
                     r"logins", log), log
    assert re.search(r"WARNING txm\.web: login of 'ann' from 127\.0\.0\.1 refused: too many failed logins", log), log
    assert "Wrong-secret" not in log and "pass word 1" not in log


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
        if "\x00" in value:  # refused before it gets this far
            boss.post(A + "/sample/delete-selected", {"csrf_token": token, "ids": ids, "back": value}, status=400)
            continue
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
        if "\x00" in value:  # refused before it gets this far
            web.get("/login", params={"next": value}, status=400)
            continue
        form = web.get("/login", params={"next": value})
        assert re.search(r'name="next" value="([^"]*)"', form.text).group(1) == "/", value
        res = web.post("/login", {"username": "ann", "password": "pass word 1", "next": value,
                                  "csrf_token": csrf_token(form)}, status=303)
        assert res.location == "http://localhost:80/", (value, res.location)
        assert web.get("/login", params={"next": value}, status=303).location == "http://localhost:80/"
        page = web.get("/password", params={"next": value})
        assert re.search(r'name="next" value="([^"]*)"', page.text).group(1) == "/", value


# --- found on the way: a NUL character in a request (PostgreSQL cannot store or compare it) ------------


def test_a_nul_character_anywhere_in_a_request_answers_400(settings, boss):
    token = panel_token(boss)
    for path in ("/admin/user/?q=a%00", "/admin/sample/?unit=M%001", "/admin/logentry/?user=%00",
                 "/admin/alarm/?unit=M1&from=%00", "/units/M%001/", "/?x=%00"):
        res = boss.get(path, expect_errors=True)
        assert res.status_int == 400 and "NUL character" in res.text, f"{path}: {res.status}"
    res = boss.post(A + "/unit/add", {"csrf_token": token, "code": "M\x002", "key": "k", "channels": "1"},
                    expect_errors=True)
    assert res.status_int == 400 and not schema.Unit.select().where(schema.Unit.code != "M1").exists()
    web = client(settings)
    form = web.get("/login")
    res = web.post("/login", {"username": "bo\x00ss", "password": "x", "csrf_token": csrf_token(form)},
                   expect_errors=True)
    assert res.status_int == 400 and not schema.LoginFailure.select().exists()
    assert web.get("/api/units", headers=basic("bo\x00ss", "x"), expect_errors=True).status_int == 400
    login(web, "boss")  # and nothing was left broken
