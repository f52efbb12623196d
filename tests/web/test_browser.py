"""End to end in a real browser: Chromium (Debian's /usr/bin/chromium) driven by Playwright against
a real ``txm serve``, with samples uploaded over TTP.

A missing browser or Playwright fails these tests: they are part of the suite, not optional.
"""

from __future__ import annotations

import csv
import re

import pytest

from tests.conftest import database_values, write_toml
from txm import manage
from txm.client import TTPClient
from txm.db import schema

TIMEOUT_MS = 20_000


@pytest.fixture
def running(serve_process, settings, config_file):
    """``txm serve`` with unit M1 (Flow, Temp) and a view of it refreshing every second. (Tests
    take it before ``browser``, so that their pages are closed, with the browser, before it stops.)"""
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    manage.syncdb(settings)
    unit = manage.add_unit("M1", "s3cret", 2, name="Tank", labels=["Flow", "Temp"])
    view = schema.View.create(name="Control room", refresh_seconds=1)
    schema.ViewEntry.create(view=view, unit=unit, channels=[1, 2])
    view_id = view.id
    schema.database.close()
    process = serve_process()
    ttp = process.wait_ready()
    http = process.web_port()
    yield {"ttp": ttp, "base": f"http://127.0.0.1:{http}", "view": view_id}
    assert process.stop() == 0


def upload(port: int, samples: list[str]) -> None:
    with TTPClient("127.0.0.1", port, timeout=10) as client:
        assert client.request("TTP /up/M1/" + "".join(samples) + " s3cret") == "OK"


def test_login_graph_csv_and_a_live_view(running, browser):
    upload(running["ttp"], [f"<2026-4-1 10:{i:02d}:00;{i};{20 + i / 2}>" for i in range(30)])
    base = running["base"]
    context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()

    # Log in as the installation's Administrator, who must first change the default password.
    page.goto(base + "/")
    assert "/login" in page.url
    page.fill("input[name=username]", "Administrator")
    page.fill("input[name=password]", "admin")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/password"))
    assert "still the installation default" in page.content()
    page.fill("input[name=old_password]", "admin")
    page.fill("input[name=new_password]", "Br0wser-tested")
    page.fill("input[name=new_password2]", "Br0wser-tested")
    page.click("main button[type=submit]")
    page.wait_for_url(base + "/")
    assert "Your password was changed" in page.inner_text("main")

    # The unit's graph and statistics.
    page.click("text=Graphs and statistics")
    page.wait_for_url(re.compile(r"/units/M1/$"))
    assert "30 samples" in page.inner_text("main")
    graph = page.locator("figure.graph svg")
    assert graph.count() == 1 and graph.is_visible()
    assert page.locator("figure.graph svg path.line").count() >= 2  # a line per channel
    stats = page.locator("table.stats tbody tr").first.inner_text()
    assert stats.split("\t")[:6] == ["Flow", "30", "0", "29", "14.5", "8.80341"]

    # The CSV download.
    with page.expect_download() as info:
        page.click("text=Download CSV")
    download = info.value
    assert download.suggested_filename == "M1_2026-03-31T102900_to_2026-04-01T102900.csv"
    with open(download.path(), encoding="utf-8", newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == ["timestamp", "Flow", "Temp"] and len(rows) == 31
    assert rows[1] == ["2026-04-01 10:00:00", "0.0", "20.0"] and rows[-1] == ["2026-04-01 10:29:00", "29.0", "34.5"]

    # The multiple-meter view updates itself after a new upload, without a reload.
    page.goto(f"{base}/views/{running['view']}/")
    flow = page.locator('[data-unit="M1"] [data-channel="1"]')
    assert flow.inner_text() == "29"
    page.evaluate("window.txmMarker = 'same page'")
    upload(running["ttp"], ["<2026-4-1 10:30:00;123.5;-4>"])
    page.wait_for_function("document.querySelector('[data-unit=\"M1\"] [data-channel=\"1\"]').textContent === '123.5'")
    assert page.locator('[data-unit="M1"] [data-channel="2"]').inner_text() == "-4"
    assert page.locator('[data-unit="M1"] [data-field="timestamp"]').inner_text() == "2026-04-01 10:30:00"
    assert page.evaluate("window.txmMarker") == "same page"  # updated in place, not reloaded

    # Log out.
    page.click("text=Log out")
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(base + "/units/M1/")
    assert "/login?next=/units/M1/" in page.url


def test_phone_sized_screen_shows_the_unit_page_without_sideways_scrolling(running, browser):
    upload(running["ttp"], [f"<2026-4-1 10:{i:02d}:00;{i};1>" for i in range(5)])
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(running["base"] + "/login?next=/units/M1/")
    page.fill("input[name=username]", "Administrator")
    page.fill("input[name=password]", "admin")
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/password"))
    page.goto(running["base"] + "/units/M1/")  # sent back: the password comes first
    assert "/password" in page.url
    page.fill("input[name=old_password]", "admin")
    page.fill("input[name=new_password]", "Ph0ne-tested")
    page.fill("input[name=new_password2]", "Ph0ne-tested")
    page.click("main button[type=submit]")
    page.wait_for_url(re.compile(r"/units/M1/$"))
    graph = page.locator("figure.graph svg").bounding_box()
    assert graph is not None and graph["width"] <= 390
    assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 1
