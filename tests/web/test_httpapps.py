"""HTTP Apps: found in HTTPApps/, switched on in [httpapps], mounted at their url; the sample app."""

from __future__ import annotations

import datetime as dt
import subprocess

import pytest

from tests.conftest import REPO, TXM, txm_subprocess_env
from tests.webutil import add_user, client, login, store_samples
from txm.config import read_settings
from txm.db import schema
from txm.errors import ConfigError
from txm.web.httpapps import load_apps, mount_point

EXAMPLE = REPO / "examples" / "httpapps" / "mobile.py"


def _with_apps(config_file, text: str, files: dict[str, str] | None = None):
    folder = config_file.parent / "HTTPApps"
    folder.mkdir(exist_ok=True)
    for name, source in (files or {}).items():
        (folder / name).write_text(source)
    config_file.write_text(config_file.read_text() + "\n[httpapps]\n" + text)
    return read_settings(config_file)


def test_the_sample_mobile_app_shows_newest_values(config_file, database):
    settings = _with_apps(config_file, 'mobile = {enabled = true, url = "m/"}\n',
                          {"mobile.py": EXAMPLE.read_text()})
    unit = schema.Unit.create(code="M1", key="k", name="Tank", channels=2, labels=["Level <m>", ""])
    schema.Unit.create(code="Hidden", key="k", channels=1)  # a code no random token holds by chance
    store_samples(unit, [(dt.datetime(2026, 5, 1, 8, 0), [1.5, None]), (dt.datetime(2026, 5, 1, 8, 1), [2.25, 7.0])])
    ann = add_user("ann")
    schema.UserUnit.create(user=ann, unit=unit)
    web = client(settings)
    assert web.get("/m/", status=303).location.endswith("/login?next=/m/")  # LOGIN_REQUIRED applies
    login(web, "ann")
    page = web.get("/m/")
    assert "Latest values" in page.text and "2.25" in page.text and "Level &lt;m&gt;" in page.text
    assert "2026-05-01 08:01:00" in page.text and 'http-equiv="refresh"' in page.text
    assert "Hidden" not in page.text  # not ann's


def test_an_app_without_url_is_loaded_but_not_routed(config_file, database):
    source = "import bottle\nLOADED = []\ndef make_app(settings):\n    LOADED.append(1)\n    app = bottle.Bottle()\n" \
             "    app.route('/', callback=lambda: 'hello')\n    return app\n"
    settings = _with_apps(config_file, "quiet = true\n", {"quiet.py": source})
    [(name, prefix, app)] = load_apps(settings)
    assert (name, prefix) == ("quiet", None) and callable(app)
    add_user("boss", is_superuser=True)
    web = client(settings)
    login(web, "boss")
    web.get("/quiet/", status=404)


def test_app_switched_off_is_not_loaded(config_file, database):
    settings = _with_apps(config_file, "broken = false\n", {"broken.py": "raise SystemError('no')\n"})
    assert load_apps(settings) == []


@pytest.mark.parametrize("source, message", [
    ("raise RuntimeError('bad import')\n", "failed to load: RuntimeError: bad import"),
    ("X = 1\n", "has no make_app(settings) function"),
    ("def make_app(settings):\n    raise ValueError('nope')\n", "make_app failed: ValueError: nope"),
    ("def make_app(settings):\n    return 42\n", "not a Bottle app or WSGI callable"),
])
def test_broken_apps_are_one_clear_error(config_file, database, source, message):
    settings = _with_apps(config_file, 'broken = {enabled = true, url = "b/"}\n', {"broken.py": source})
    with pytest.raises(ConfigError, match="HTTP App 'broken'") as info:
        load_apps(settings)
    assert message in str(info.value)


def test_missing_app_and_taken_urls(config_file, database):
    settings = _with_apps(config_file, "ghost = true\n")
    with pytest.raises(ConfigError, match="no .*HTTPApps/ghost.py.* and no installed 'txm.httpapps' entry point"):
        load_apps(settings)
    for url in ("admin/", "/units", "", "api/v2/", "static/"):
        with pytest.raises(ConfigError, match="is not free"):
            mount_point("x", url)
    assert mount_point("x", "iphone") == "/iphone/" and mount_point("x", "/a/b/") == "/a/b/"


def test_a_broken_app_stops_serve_with_one_line(config_file, database):
    _with_apps(config_file, 'broken = {enabled = true, url = "b/"}\n', {"broken.py": "raise RuntimeError('bad')\n"})
    text = config_file.read_text().replace("[httpapps]", 'DS_PORT = 0\nBIND_ADDRESS = "127.0.0.1"\n[httpapps]', 1)
    # top-level keys must come before the first table in TOML
    head, _, apps = text.partition('DS_PORT = 0\nBIND_ADDRESS = "127.0.0.1"\n')
    config_file.write_text('DS_PORT = 0\nBIND_ADDRESS = "127.0.0.1"\n' + head + apps)
    result = subprocess.run([*TXM, "--config", str(config_file), "serve"], capture_output=True, text=True,
                            env=txm_subprocess_env(), timeout=90)
    assert result.returncode == 2, result  # a configuration error
    assert "HTTP App 'broken'" in result.stderr and "failed to load: RuntimeError: bad" in result.stderr
    assert "Traceback" not in result.stderr
