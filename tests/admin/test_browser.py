"""End to end in a real browser: a staff user creates a unit and a view in the admin panel of a real
``txm serve`` and then sees both on the home page."""

from __future__ import annotations

from tests.conftest import database_values, write_toml
from txm import manage
from txm.db import schema
from txm.passwords import make_password


def test_create_a_unit_and_a_view_then_see_them_on_the_home_page(serve_process, settings, config_file, browser):
    write_toml(config_file, {**database_values(settings), "DS_PORT": 0, "HTTP_PORT": 0, "BIND_ADDRESS": "127.0.0.1"})
    manage.syncdb(settings)
    schema.User.create(username="boss", password=make_password("Boss-pass-1", iterations=1000), is_staff=True,
                       is_superuser=True)
    schema.database.close()
    process = serve_process()
    base = f"http://127.0.0.1:{process.web_port()}"

    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(base + "/admin/")
    assert "/login" in page.url  # sent to log in first
    page.fill("input[name=username]", "boss")
    page.fill("input[name=password]", "Boss-pass-1")
    page.click("button[type=submit]:has-text('Log in')")
    page.wait_for_url(base + "/admin/")

    page.get_by_role("link", name="Units", exact=True).click()
    page.click("a.button:has-text('Add unit')")
    page.fill("#id_code", "Tank 1")  # not alphanumeric: refused, what was typed is kept
    page.fill("#id_key", "s3cret")
    page.fill("#id_name", "North tank")
    page.fill("#id_channels", "2")
    page.fill("#id_labels", "Level,Temp")
    page.click("button[name=_save]")
    assert "letters and digits only" in page.inner_text("#error-code")
    assert page.input_value("#id_name") == "North tank" and page.input_value("#id_labels") == "Level,Temp"
    page.fill("#id_code", "TANK1")
    page.click("button[name=_save]")
    page.wait_for_url(base + "/admin/unit/")
    assert "was added" in page.inner_text("main")
    assert "TANK1" in page.inner_text("table")

    page.goto(base + "/admin/")
    page.get_by_role("link", name="Multiple-meter views", exact=True).click()
    page.click("a.button:has-text('Add multiple-meter view')")
    page.fill("#id_name", "Tank farm")
    page.fill("#id_refresh_seconds", "5")
    page.select_option("#id_entry1_unit", label="TANK1 (North tank)")
    page.fill("#id_entry1_channels", "1")
    page.click("button[name=_save]")
    page.wait_for_url(base + "/admin/view/")
    assert "Tank farm" in page.inner_text("table")

    page.click("nav >> text=Units and views")
    page.wait_for_url(base + "/")
    main = page.inner_text("main")
    assert "TANK1" in main and "North tank" in main
    assert "Tank farm" in main
    page.click("text=Tank farm")
    assert "/views/" in page.url

    with schema.database.connection_context():
        view = schema.View.get(schema.View.name == "Tank farm")
        entries = [(e.unit.code, e.channels) for e in view.entries]
        assert entries == [("TANK1", [1])]
        assert [e.action for e in schema.LogEntry.select().order_by(schema.LogEntry.id)] == ["add", "add"]
    assert process.stop() == 0
