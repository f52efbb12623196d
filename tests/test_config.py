"""Settings: both file formats, the search order, and every error path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from txm import config
from txm.cli import cli
from txm.errors import ConfigError

LEGACY = """\
# a Data Server 3 configuration
DS_PORT: 9996
HTTP_PORT: 8081
SOCKET_OPEN: no
CHANNEL_TIMEOUT: 30

[email]
EMAIL_HOST: smtp.example.com
EMAIL_PORT: 587
EMAIL_USE_TLS: on

[database]
DATABASE_ENGINE: sqlite3
DATABASE_NAME: db\\data_server3.db
DATABASE_PORT:
COMMIT_INTERVAL: 100

[graph]
MAX_PLOT_POINTS: 2000

[httpapps]
iphone: on
iphone.url: iphone/
reports: off

[ttpapps]
ok: on
"""

TOML = """\
DS_PORT = 9996
HTTP_PORT = 8081
SOCKET_OPEN = false
CHANNEL_TIMEOUT = 30

[email]
EMAIL_HOST = "smtp.example.com"
EMAIL_PORT = 587
EMAIL_USE_TLS = true

[database]
DATABASE_ENGINE = "sqlite3"
DATABASE_NAME = "db/data_server3.db"
COMMIT_INTERVAL = 100

[graph]
MAX_PLOT_POINTS = 2000

[httpapps]
iphone = { enabled = true, url = "iphone/" }
reports = false

[ttpapps]
ok = true

[dataexport]
EXPORT_UNITS = ["M1", "M2"]
"""


@pytest.mark.parametrize("name,text", [("txm.conf", LEGACY), ("txm.toml", TOML)])
def test_both_formats_give_the_same_settings(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    s = config.read_settings(path)
    assert s.DS_PORT == 9996 and s.HTTP_PORT == 8081
    assert s.SOCKET_OPEN is False and s.CHANNEL_TIMEOUT == 30.0
    assert s.EMAIL_HOST == "smtp.example.com" and s.EMAIL_PORT == 587 and s.EMAIL_USE_TLS is True
    assert s.COMMIT_INTERVAL == 100 and s.MAX_PLOT_POINTS == 2000
    assert s.DATABASE_PORT == 0  # empty in the legacy file: the default
    assert s.sqlite_path() == tmp_path / "db" / "data_server3.db"
    assert s.httpapps["iphone"].enabled and s.httpapps["iphone"].url == "iphone/"
    assert s.httpapps["reports"].enabled is False and s.httpapps["reports"].url is None
    assert s.ttpapps["ok"].enabled
    assert s.sources["DS_PORT"].startswith(str(path))
    assert s.sources["LOGIN_REQUIRED"] == "default"


def test_toml_list_and_all(tmp_path):
    p = tmp_path / "txm.toml"
    p.write_text(TOML)
    assert config.read_settings(p).EXPORT_UNITS == ["M1", "M2"]
    p.write_text('[dataexport]\nEXPORT_UNITS = "all"\n')
    assert config.read_settings(p).EXPORT_UNITS == []


def test_defaults_are_the_manuals():
    s = config.defaults()
    assert (s.DS_PORT, s.HTTP_PORT, s.MAINTENANCE_INTERVAL) == (9995, 8080, 500)
    assert s.SOCKET_OPEN is True and s.LOGIN_REQUIRED is True
    assert (s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_USE_TLS) == ("localhost", 25, False)
    assert s.DATABASE_ENGINE == "sqlite3" and s.COMMIT_INTERVAL == 1 and s.MAX_PLOT_POINTS == 0


def test_default_database_lives_in_the_user_data_folder(isolated_home):
    path = config.defaults().sqlite_path()
    assert path == isolated_home / ".local" / "share" / "txm" / "txm.db"


def test_engine_aliases(tmp_path):
    p = tmp_path / "txm.conf"
    p.write_text("DATABASE_ENGINE: postgresql_psycopg2\n")
    assert config.read_settings(p).DATABASE_ENGINE == "postgresql"


@pytest.mark.parametrize("text,fragment", [
    ("DS_PORT: 70000\n", "line 1: DS_PORT must be a whole number from 0 to 65535, not '70000'"),
    ("DS_PORT: ninety\n", "line 1: DS_PORT must be a whole number"),
    ("\nSOCKET_OPEN: maybe\n", "line 2: SOCKET_OPEN must be yes or no"),
    ("NO_SUCH_KEY: 1\n", "line 1: unknown setting 'NO_SUCH_KEY'"),
    ("[email]\nDS_PORT: 1\n", "line 2: DS_PORT belongs in the [main] section"),
    ("[nosuch]\n", "line 1: unknown section [nosuch]"),
    ("just some words\n", "line 1: expected 'KEY: value'"),
    ("DATABASE_ENGINE: oracle\n", "DATABASE_ENGINE must be one of sqlite3, postgresql, mysql"),
    ("COMMIT_INTERVAL: 0\n", "COMMIT_INTERVAL must be a whole number of at least 1"),
    ("[ttpapps]\nok: perhaps\n", "line 2: ok must be on or off"),
    ("[ttpapps]\nok.url: x/\n", "only HTTP apps have a url"),
    ("DATABASE_PASSWORD: 1\n[database]\nDATABASE_PORT: secret\n", "line 3: DATABASE_PORT must be"),
])
def test_legacy_errors_name_file_line_and_expectation(tmp_path, text, fragment):
    p = tmp_path / "txm.conf"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.read_settings(p)
    assert str(p) in str(err.value)
    assert fragment in str(err.value)
    assert err.value.exit_code == 2


@pytest.mark.parametrize("text,fragment", [
    ("DS_PORT = 70000\n", "DS_PORT: DS_PORT must be a whole number from 0 to 65535"),
    ('DS_PORT = "9995"\n', "DS_PORT must be a whole number"),
    ("[database]\nDATABASE_PORT = 1.5\n", "[database] DATABASE_PORT: DATABASE_PORT must be a whole number"),
    ("WHAT = 1\n", "unknown setting 'WHAT'"),
    ("[graph]\nDS_PORT = 1\n", "DS_PORT belongs in the [main] section"),
    ("[nosuch]\nx = 1\n", "unknown section [nosuch]"),
    ("DS_PORT = \n", "not valid TOML"),
    ('[httpapps]\niphone = { enabled = true, path = "x" }\n', "unknown app option(s) path"),
    ("[dataexport]\nEXPORT_UNITS = [1, 2]\n", "EXPORT_UNITS must be a comma-separated list"),
])
def test_toml_errors_name_file_and_key(tmp_path, text, fragment):
    p = tmp_path / "txm.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.read_settings(p)
    assert str(p) in str(err.value) and fragment in str(err.value)


def test_secret_values_are_not_echoed_in_errors(tmp_path):
    p = tmp_path / "txm.toml"
    p.write_text('[database]\nDATABASE_PASSWORD = 12345\n')
    with pytest.raises(ConfigError) as err:
        config.read_settings(p)
    assert "12345" not in str(err.value)


def test_search_order(tmp_path, monkeypatch):
    cwd, home, elsewhere = tmp_path / "cwd", tmp_path / "home", tmp_path / "else"
    for d in (cwd, home, elsewhere):
        d.mkdir()
    (home / "txm.conf").write_text("DS_PORT: 2\n")
    assert config.load_settings(env={}, cwd=cwd, home=home).DS_PORT == 2
    (home / "txm.toml").write_text("DS_PORT = 3\n")  # TOML first within a folder
    assert config.load_settings(env={}, cwd=cwd, home=home).DS_PORT == 3
    (cwd / "txm.conf").write_text("DS_PORT: 4\n")  # ./ before ~/
    assert config.load_settings(env={}, cwd=cwd, home=home).DS_PORT == 4
    (elsewhere / "env.conf").write_text("DS_PORT: 5\n")  # $TXM_CONFIG before the search path
    env = {config.ENV_VAR: str(elsewhere / "env.conf")}
    assert config.load_settings(env=env, cwd=cwd, home=home).DS_PORT == 5
    (elsewhere / "given.toml").write_text("DS_PORT = 6\n")  # --config before everything
    assert config.load_settings(elsewhere / "given.toml", env=env, cwd=cwd, home=home).DS_PORT == 6


def test_search_path_ends_in_etc():
    paths = config.search_paths(Path("/a"), Path("/b"))
    assert [str(p) for p in paths] == ["/a/txm.toml", "/a/txm.conf", "/b/txm.toml", "/b/txm.conf",
                                       "/etc/txm.toml", "/etc/txm.conf"]


@pytest.mark.parametrize("origin", ["option", "env"])
def test_a_named_file_that_is_missing_is_an_error(tmp_path, origin):
    missing = tmp_path / "nope.toml"
    kwargs = {"explicit": missing} if origin == "option" else {"env": {config.ENV_VAR: str(missing)}}
    with pytest.raises(ConfigError, match="does not exist"):
        config.load_settings(**kwargs)


def test_relative_database_name_follows_the_config_file(tmp_path):
    sub = tmp_path / "etc"
    sub.mkdir()
    (sub / "txm.toml").write_text('DATABASE_NAME = "data/meters.db"\n')
    assert config.read_settings(sub / "txm.toml").sqlite_path() == sub / "data" / "meters.db"


def test_replace_validates():
    s = config.defaults().replace(DS_PORT=0)
    assert s.DS_PORT == 0 and s.sources["DS_PORT"] == "command line"
    with pytest.raises(ConfigError, match="HTTP_PORT must be"):
        s.replace(HTTP_PORT=70000)


def test_txm_config_shows_file_values_and_sources(tmp_path):
    p = tmp_path / "txm.conf"
    p.write_text(LEGACY + "\n[database]\nDATABASE_PASSWORD: hunter2\n")
    result = CliRunner().invoke(cli, ["--config", str(p), "config"])
    assert result.exit_code == 0, result.output
    assert f"Configuration file: {p}" in result.output
    assert "9996" in result.output and "txm.conf line 2" in result.output
    assert "hunter2" not in result.output and "********" in result.output
    assert "iphone" in result.output and "url iphone/" in result.output


def test_txm_config_json_and_no_file(tmp_path):
    import json

    result = CliRunner().invoke(cli, ["config", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["file"] is None
    assert {"section": "main", "key": "DS_PORT", "value": "9995", "source": "default"} in data["settings"]


def test_bad_config_exits_2_with_the_reason(tmp_path):
    p = tmp_path / "txm.toml"
    p.write_text("HTTP_PORT = 70000\n")
    result = CliRunner().invoke(cli, ["--config", str(p), "config"])
    assert result.exit_code == 2
    assert "HTTP_PORT must be a whole number from 0 to 65535" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("name", ["txm.toml", "txm.conf"])
def test_shipped_examples_are_valid(name):
    path = Path(__file__).resolve().parent.parent / "examples" / name
    s = config.read_settings(path)
    assert s.DS_PORT == 9995 and s.HTTP_PORT == 8080 and s.ttpapps["ok"].enabled is False
