"""Attacks on the web interface and the admin panel, reproduced against the real apps."""

from __future__ import annotations

import html
import re

import pytest

from tests.test_adminpanel import add_samples
from tests.webutil import add_user, client, login
from txm.db import schema

A = "/admin"


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
