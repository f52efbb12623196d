"""Attacks on the web interface and the admin panel, reproduced against the real apps."""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from tests.test_adminpanel import add_samples
from tests.webutil import add_user, client, csrf_token, login
from txm.db import schema
from txm.webcore import safe_next

A = "/admin"


def panel_token(web) -> str:
    return csrf_token(web.get(A + "/"))


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
