"""The web foundation in process: login and logout, sessions, CSRF, access levels, error pages."""

from __future__ import annotations

import datetime as dt
import hashlib

import bottle
import pytest

from tests.webutil import add_user, client, csrf_token, login
from txm.db import schema
from txm.passwords import ALGORITHM, ITERATIONS, check_password
from txm.serve import make_site
from txm.webcore import (
    COOKIE_NAME,
    LOGIN_FAILURES_PER_ADDRESS,
    LOGIN_FAILURES_PER_USER,
    WebCore,
    session_key,
)


@pytest.fixture
def web(settings, database):
    return client(settings)


def _cookie(app) -> str:
    return app.cookies[COOKIE_NAME]


# --- login required ---------------------------------------------------------------------------


def test_anonymous_visitor_is_sent_to_login_with_next(web):
    res = web.get("/?from=2026-01-01", status=303)
    assert res.location.endswith("/login?next=/%3Ffrom%3D2026-01-01")
    page = res.follow()
    assert 'name="username"' in page and 'name="password"' in page and 'name="next"' in page


def test_login_page_and_static_files_are_public(web):
    assert web.get("/login").status_int == 200
    css = web.get("/static/txm.css")
    assert "text/css" in css.content_type and ".topbar" in css.text


def test_without_login_required_the_home_page_is_public(settings, database):
    schema.Unit.create(code="M1", key="k", name="<b>Tank</b>")
    web = client(settings.replace(LOGIN_REQUIRED=False))
    page = web.get("/", status=200)
    assert "M1" in page and "&lt;b&gt;Tank&lt;/b&gt;" in page.text and "<b>Tank</b>" not in page.text
    assert web.get("/password", status=303).location.endswith("/login?next=/password")


# --- logging in ----------------------------------------------------------------------------------


def test_login_sets_an_httponly_samesite_cookie_whose_hash_is_the_session_key(web):
    user = add_user("ann")
    res = login(web, "ann", next="/somewhere")
    assert res.location.endswith("/somewhere")
    header = [v for k, v in res.headerlist if k == "Set-Cookie" and v.startswith(COOKIE_NAME)][-1]
    assert "HttpOnly" in header and "samesite=lax" in header.lower()
    token = _cookie(web)
    row = schema.WebSession.get(schema.WebSession.key == hashlib.sha256(token.encode()).hexdigest())
    assert row.user_id == user.id and row.expires > schema.utcnow() + dt.timedelta(days=13)
    assert schema.WebSession.get_or_none(schema.WebSession.key == token) is None  # the token itself is not stored
    assert schema.User.get_by_id(user.id).last_login is not None
    assert "ann" in web.get("/").text


def test_login_rotates_the_session_token(web):
    add_user("ann")
    web.get("/login")
    before = _cookie(web)
    login(web, "ann")
    assert _cookie(web) != before
    assert schema.WebSession.get_or_none(schema.WebSession.key == session_key(before)) is None


def test_wrong_password_says_so_and_records_the_failure(web):
    add_user("ann")
    res = login(web, "ann", "nope", status=401)
    assert "Wrong user name or password" in res.text
    assert 'value="ann"' in res.text  # the name is kept in the form
    failure = schema.LoginFailure.get()
    assert (failure.username, failure.address) == ("ann", "192.0.2.10")


def test_unknown_user_and_disabled_user_cannot_log_in(web):
    add_user("off", is_active=False)
    assert "Wrong user name" in login(web, "ghost", status=401).text
    assert "disabled" in login(web, "off", status=401).text


def test_failed_logins_are_limited_per_user(settings, database):
    add_user("ann")
    web = client(settings)
    for _ in range(LOGIN_FAILURES_PER_USER):
        login(web, "ann", "wrong", status=401)
    res = login(web, "ann", status=401)  # the right password, but too late
    assert "Too many failed logins" in res.text
    assert "Too many failed logins" in login(web, "ANN", status=401).text  # whatever the case
    login(client(settings, address="198.51.100.7"), "ann")  # from elsewhere the owner still may
    add_user("bob")
    login(web, "bob")  # other users from this address still may


def test_failed_logins_are_limited_per_address(settings, database):
    add_user("ann")
    web = client(settings, address="203.0.113.5")
    for i in range(LOGIN_FAILURES_PER_ADDRESS):
        login(web, f"guess{i}", "x", status=401)
    assert "Too many failed logins" in login(web, "ann", status=401).text
    login(client(settings, address="203.0.113.6"), "ann")


def test_failures_older_than_the_window_do_not_count(web):
    add_user("ann")
    old = schema.utcnow() - dt.timedelta(hours=1)
    for _ in range(LOGIN_FAILURES_PER_USER):
        schema.LoginFailure.create(username="ann", address="192.0.2.10", when=old)
    login(web, "ann")


def test_failures_are_shared_by_every_node(settings, database):
    add_user("ann")
    node_a, node_b = client(settings), client(settings)
    for _ in range(LOGIN_FAILURES_PER_USER):
        login(node_a, "ann", "wrong", status=401)
    assert "Too many" in login(node_b, "ann", status=401).text


def test_legacy_sha1_hash_is_upgraded_on_login(web):
    salt = "abc"
    legacy = f"sha1${salt}${hashlib.sha1((salt + 'old secret').encode()).hexdigest()}"
    user = schema.User.create(username="old", password=legacy)
    login(web, "old", "old secret")
    stored = schema.User.get_by_id(user.id).password
    assert stored.startswith(f"{ALGORITHM}${ITERATIONS}$") and check_password("old secret", stored)


def test_next_must_stay_on_this_site(web):
    add_user("ann")
    for evil in ("//evil.example/", "https://evil.example/", "/\\evil.example"):
        assert login(web, "ann", next=evil).location.endswith("://localhost:80/") or \
            login(web, "ann", next=evil).location.rstrip("/").endswith("localhost")
        web.reset()


def test_login_without_csrf_token_is_refused(web):
    add_user("ann")
    web.get("/login")
    res = web.post("/login", {"username": "ann", "password": "pass word 1"}, status=403)
    assert "Reload the page" in res.text and "Traceback" not in res.text
    res = web.post("/login", {"username": "ann", "password": "pass word 1", "csrf_token": "forged"}, status=403)
    assert schema.User.get(schema.User.username == "ann").last_login is None


def test_session_works_on_another_node(settings, database):
    add_user("ann")
    node_a, node_b = client(settings), client(settings)
    login(node_a, "ann")
    node_b.set_cookie(COOKIE_NAME, _cookie(node_a))
    assert "ann" in node_b.get("/").text


# --- the default password --------------------------------------------------------------------------


def test_default_password_user_must_change_it_first(web):
    res = login(web, "Administrator", "admin", next="/units/")
    assert "/password?next=" in res.location
    page = res.follow()
    assert "still the installation default" in page.text
    assert "/password" in web.get("/", status=303).location  # every page sends there first
    form = {"old_password": "admin", "new_password": "admin", "new_password2": "admin",
            "csrf_token": csrf_token(page), "next": "/"}
    assert "other than the installation default" in web.post("/password", form, status=400).text
    form.update(new_password="n3w secret!", new_password2="n3w secret!")
    res = web.post("/password", form, status=303)
    assert res.location.endswith("/")
    assert "Your password was changed" in res.follow().text
    assert check_password("n3w secret!", schema.User.get(schema.User.username == "Administrator").password)


def test_password_change_checks_and_ends_other_sessions(settings, database):
    add_user("ann")
    phone, desk = client(settings), client(settings)
    login(phone, "ann")
    login(desk, "ann")
    page = desk.get("/password")
    token = csrf_token(page)
    bad = {"old_password": "wrong", "new_password": "a", "new_password2": "a", "csrf_token": token}
    assert "current password is not right" in desk.post("/password", bad, status=400).text
    bad.update(old_password="pass word 1", new_password2="b")
    assert "differ" in desk.post("/password", bad, status=400).text
    bad.update(new_password="", new_password2="")
    assert "at least one character" in desk.post("/password", bad, status=400).text
    ok = {"old_password": "pass word 1", "new_password": "abc", "new_password2": "abc", "csrf_token": token}
    page = desk.post("/password", ok, status=303).follow()
    assert "logged out elsewhere" in page.text and "weak password" in page.text
    assert phone.get("/", status=303).location.endswith("/login?next=/")  # the other session is gone
    assert "ann" in desk.get("/").text


# --- logging out -----------------------------------------------------------------------------------


def test_logout_is_a_post_with_csrf_and_ends_the_session(web):
    add_user("ann")
    login(web, "ann")
    token = _cookie(web)
    page = web.get("/")
    assert web.get("/logout", status=405).status_int == 405
    web.post("/logout", {}, status=403)
    res = web.post("/logout", {"csrf_token": csrf_token(page)}, status=303)
    assert res.location.endswith("/login")
    assert schema.WebSession.get_or_none(schema.WebSession.key == session_key(token)) is None
    web.set_cookie(COOKIE_NAME, token)  # an old cookie is worth nothing
    web.get("/", status=303)


def test_disabled_user_loses_access_at_once(web):
    user = add_user("ann")
    login(web, "ann")
    schema.User.update(is_active=False).where(schema.User.id == user.id).execute()
    assert web.get("/", status=303).location.endswith("/login?next=/")


def test_expired_session_is_not_accepted(web):
    add_user("ann")
    login(web, "ann")
    schema.WebSession.update(expires=schema.utcnow() - dt.timedelta(seconds=1)).execute()
    web.get("/", status=303)


# --- access levels, error pages, an app built on webcore ---------------------------------------------


def _staff_app(settings):
    """A small app built on webcore as the admin panel is, mounted into the web interface."""

    parent = make_site(settings)
    child = bottle.Bottle()
    core = WebCore(settings)
    core.install(child, default_access="staff")

    @child.get("/")
    def index():
        return core.render("error.html", status=200, title="Staff page", message=f"hello {core.user.username}")

    @child.post("/do")
    def do():
        core.flash("done", "success")
        core.redirect("/staffapp/")

    @child.get("/boom")
    def boom():
        raise RuntimeError("secret detail")

    parent.mount("/staffapp/", child)
    return parent


def test_staff_pages_need_an_active_staff_user_even_without_login_required(settings, database):
    add_user("ann")
    add_user("boss", is_staff=True)
    settings = settings.replace(LOGIN_REQUIRED=False)
    web = client(settings, _staff_app(settings))
    assert web.get("/staffapp/", status=303).location.endswith("/login?next=/staffapp/")
    login(web, "ann")
    assert "staff users only" in web.get("/staffapp/", status=403).text
    web.reset()
    login(web, "boss")
    page = web.get("/staffapp/")
    assert "hello boss" in page.text
    web.post("/staffapp/do", {}, status=403)  # CSRF checked for the mounted app too
    res = web.post("/staffapp/do", {"csrf_token": csrf_token(page)}, status=303)
    assert "done" in res.follow().text


def test_error_pages_have_no_traceback(settings, database):
    add_user("boss", is_staff=True)
    web = client(settings, _staff_app(settings))
    login(web, "boss")
    res = web.get("/no/such/page", status=404)
    assert "Not found" in res.text and "boss" in res.text  # the layout, with the user
    res = web.get("/staffapp/boom", status=500, expect_errors=True)  # the traceback goes to wsgi.errors
    assert "went wrong" in res.text
    assert "secret detail" not in res.text and "Traceback" not in res.text


def test_flash_messages_show_once(settings, database):
    add_user("boss", is_staff=True)
    web = client(settings, _staff_app(settings))
    login(web, "boss")
    page = web.get("/staffapp/")
    web.post("/staffapp/do", {"csrf_token": csrf_token(page)})
    assert "done" in web.get("/").text
    assert "done" not in web.get("/").text


def test_purge_deletes_expired_sessions_and_old_failures(settings, database):
    past = schema.utcnow() - dt.timedelta(days=1)
    schema.WebSession.create(key="a" * 64, data={}, expires=past)
    schema.WebSession.create(key="b" * 64, data={}, expires=schema.utcnow() + dt.timedelta(days=1))
    schema.LoginFailure.create(username="x", address="1.2.3.4", when=past)
    WebCore(settings).purge(force=True)
    assert [s.key for s in schema.WebSession.select()] == ["b" * 64]
    assert schema.LoginFailure.select().count() == 0


def test_pages_forbid_framing_and_sniffing(web):
    for res in (web.get("/login"), web.get("/", status=303)):
        assert res.headers["X-Frame-Options"] == "DENY"
        assert res.headers["X-Content-Type-Options"] == "nosniff"
        assert res.headers["Referrer-Policy"] == "same-origin"
