"""Settings: one table drives parsing, validation, ``txm config`` and docs/settings.md.

Two file formats carry the same keys:

* ``txm.toml`` -- TOML; keys at the top level or in their section's table.
* ``txm.conf`` -- the Data Server's format: ``KEY: value`` lines, ``[section]`` headers,
  ``#`` or ``;`` comments, ``yes/no/on/off`` booleans.

A key may stand at the top level (or in ``[main]``) or in its own section. An unknown key,
a key in another section, a wrong type or an impossible value is a :class:`ConfigError`
naming the file, the line (or key) and what was expected.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from txm.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

TOML_NAME = "txm.toml"
CONF_NAME = "txm.conf"
ENV_VAR = "TXM_CONFIG"
APP_SECTIONS = ("httpapps", "ttpapps")

_TRUE = {"yes", "on", "true", "1"}
_FALSE = {"no", "off", "false", "0"}


# --- value types -------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """How a setting's text (legacy file) or TOML value becomes a Python value."""

    name: str
    expected: str
    parse_text: Callable[[str], Any]
    accept: Callable[[Any], Any]


def _bool_text(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError


def _bool_value(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _bool_text(value)
    raise ValueError


def _int_value(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError
    return value


def _float_value(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError
    return float(value)


def _str_value(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError
    return value


def _list_text(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _list_value(value: Any) -> list[str]:
    if isinstance(value, str):
        return _list_text(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return [v.strip() for v in value if v.strip()]
    raise ValueError


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def ip_networks(entries: list[str]) -> list[IPNetwork]:
    """The networks of a list of IP addresses (one host) and networks such as ``192.168.1.0/24``;
    ValueError for an entry that is neither, or a network with host bits set (``192.168.1.7/24``)."""
    return [ipaddress.ip_network(entry) for entry in entries]


def _networks_value(value: Any) -> list[str]:
    entries = _list_value(value)
    if [entry.lower() for entry in entries] == ["all"]:
        return []
    ip_networks(entries)
    return entries


BOOL = Kind("bool", "yes or no (also on/off, true/false)", _bool_text, _bool_value)
INT = Kind("int", "a whole number", lambda t: int(t.strip()), _int_value)
FLOAT = Kind("float", "a number", lambda t: float(t.strip()), _float_value)
STR = Kind("str", "text", lambda t: t, _str_value)
LIST = Kind("list", "a comma-separated list (or a TOML array of strings)", _list_text, _list_value)
NETWORKS = Kind("networks", "a comma-separated list of IP addresses and networks such as 192.168.1.0/24 "
                "(or a TOML array of strings), or all", _networks_value, _networks_value)


@dataclass(frozen=True)
class Setting:
    """One row of the settings table."""

    key: str
    section: str
    kind: Kind
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    aliases: Mapping[str, str] = field(default_factory=dict)
    secret: bool = False

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        text = self.kind.expected
        if self.minimum is not None and self.maximum is not None:
            text += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            text += f" of at least {self.minimum:g}"
        return text

    def check(self, value: Any) -> Any:
        """Validate an already-typed value; raise ValueError when it is impossible."""
        if self.choices:
            value = self.aliases.get(str(value).strip().lower(), str(value).strip().lower())
            if value not in self.choices:
                raise ValueError
        if self.minimum is not None and value < self.minimum:
            raise ValueError
        if self.maximum is not None and value > self.maximum:
            raise ValueError
        return value


def _port(key: str, section: str, default: int, help: str) -> Setting:
    return Setting(key, section, INT, default, help + " 0 picks any free port.", 0, 65535)


SETTINGS: tuple[Setting, ...] = (
    # main
    _port("DS_PORT", "main", 9995, "TCP port the TTP server listens on for Tiger meters."),
    _port("HTTP_PORT", "main", 8080, "TCP port of the web interface and admin panel."),
    Setting("BIND_ADDRESS", "main", STR, "0.0.0.0",
            "Address both servers bind to: 0.0.0.0 for every IPv4 interface, 127.0.0.1 for this machine only, :: for IPv6."),
    Setting("MAINTENANCE_INTERVAL", "main", INT, 500,
            "Requests the TTP server handles between sweeps for dead connections (it also sweeps every few seconds).", 1),
    Setting("CHANNEL_TIMEOUT", "main", FLOAT, 120.0,
            "Seconds a TTP connection may stall mid-request or sit idle before it is closed.", 0.1),
    Setting("SOCKET_OPEN", "main", BOOL, True,
            "Keep a meter's connection open after each response (no: close after every response)."),
    Setting("MAX_REQUEST_BYTES", "main", INT, 1_048_576,
            "Longest TTP request accepted, in bytes; a longer one gets 400 Bad request and is closed.", 64),
    Setting("MAX_CONNECTIONS", "main", INT, 20_000,
            "Most TTP connections held at once; further ones are refused without disturbing the others.", 1),
    Setting("LOGIN_REQUIRED", "main", BOOL, True,
            "Visitors must log in to see units, graphs and views (the admin panel always needs a staff login)."),
    Setting("SESSION_DAYS", "main", INT, 14,
            "Days a web login lasts without use; each visit renews it.", 1, 3650),
    Setting("SESSION_COOKIE_SECURE", "main", BOOL, False,
            "Send the session cookie over HTTPS only: set it when users reach txm through an HTTPS proxy."),
    Setting("TRUSTED_PROXY", "main", STR, "",
            "Address of a reverse proxy in front of the web interface (e.g. 127.0.0.1) whose X-Forwarded-For, "
            "-Proto and -Host headers are believed; empty: none are."),
    # the web server's slow clients (txm.web.process, txm.webcore.DownloadSlots)
    Setting("WEB_DOWNLOADS_PER_CLIENT", "main", INT, 2,
            "CSV downloads one user (not logged in: one address) may run at once; more get 429 Too Many Requests.",
            1, 6),
    Setting("WEB_DOWNLOADS_AT_ONCE", "main", INT, 4,
            "CSV downloads the web interface runs at once, whoever asks; more get 503. At most 6, so that 2 of "
            "the web server's 8 threads are always free for pages.", 1, 6),
    Setting("WEB_STALL_SECONDS", "main", FLOAT, 30.0,
            "Seconds a web client may take none of a response waiting for it (a download it stopped reading) "
            "before its connection is closed and the thread serving it freed.", 1.0),
    # email
    Setting("EMAIL_HOST", "email", STR, "localhost", "SMTP server that sends alarm emails."),
    Setting("EMAIL_PORT", "email", INT, 25, "SMTP server port.", 1, 65535),
    Setting("EMAIL_USE_TLS", "email", BOOL, False, "Use STARTTLS on the SMTP connection."),
    Setting("EMAIL_USE_SSL", "email", BOOL, False, "Connect to the SMTP server over SSL/TLS from the start (usually port 465)."),
    Setting("EMAIL_HOST_USER", "email", STR, "", "User name for SMTP authentication; empty for none."),
    Setting("EMAIL_HOST_PASSWORD", "email", STR, "", "Password for SMTP authentication.", secret=True),
    Setting("DEFAULT_FROM_EMAIL", "email", STR, "txm@localhost", "Sender address of alarm emails."),
    Setting("EMAIL_TIMEOUT", "email", FLOAT, 30.0, "Seconds to wait for the SMTP server.", 0.1),
    Setting("ALARM_EMAIL_MIN_INTERVAL", "email", FLOAT, 0.0,
            "Least seconds between two alarm emails for the same unit and level; 0 sends every one.", 0),
    Setting("ALARM_EMAIL_MAX_AGE", "email", FLOAT, 86400.0,
            "Seconds an alarm email is tried again after SMTP failures, counted from the alarm's arrival (a day); "
            "the first attempt that fails after that marks it failed. Permanent SMTP refusals fail at once.", 1),
    Setting("ALARM_EMAIL_ATTEMPTS", "email", INT, 0,
            "Most attempts at sending an alarm email before it is marked failed, however young the alarm; "
            "0: no such count, ALARM_EMAIL_MAX_AGE decides.", 0),
    Setting("ALARM_EMAIL_RETRY_DELAY", "email", FLOAT, 60.0,
            "Seconds before the first new attempt after an SMTP failure; each later one waits twice as long, "
            "at most 10 minutes (or this delay, if longer).", 0.01),
    # database
    Setting("DATABASE_ENGINE", "database", STR, "sqlite3", "Database engine.",
            choices=("sqlite3", "postgresql", "mysql"),
            aliases={"sqlite": "sqlite3", "postgres": "postgresql", "postgresql_psycopg2": "postgresql",
                     "mariadb": "mysql"}),
    Setting("DATABASE_NAME", "database", STR, "",
            "SQLite: the database file (relative to the configuration file's folder); empty: txm.db in the "
            "per-user data folder. PostgreSQL/MySQL: the database name (empty: txm)."),
    Setting("DATABASE_USER", "database", STR, "", "Database user (PostgreSQL/MySQL)."),
    Setting("DATABASE_PASSWORD", "database", STR, "", "Database password (PostgreSQL/MySQL).", secret=True),
    Setting("DATABASE_HOST", "database", STR, "", "Database host (PostgreSQL/MySQL); empty: the local socket."),
    Setting("DATABASE_PORT", "database", INT, 0, "Database port (PostgreSQL/MySQL); 0: the engine's default.", 0, 65535),
    Setting("COMMIT_INTERVAL", "database", INT, 1,
            "1: answer OK only once an upload is committed (grouped per pass of the server loop). "
            "N > 1: answer at once and commit every N uploads and at least every second.", 1),
    # graph
    Setting("MAX_PLOT_POINTS", "graph", INT, 0,
            "Most points drawn per graph line; longer lines are reduced keeping peaks. "
            "0: as many as the graph's width can show (4 per pixel).", 0),
    Setting("STALE_SECONDS", "graph", FLOAT, 600.0,
            "A multiple-meter view marks a unit stale when its newest sample arrived longer ago than this.", 1),
    # admin
    Setting("ALLOW_SAMPLE_DELETION", "admin", BOOL, True, "The admin panel may delete samples."),
    Setting("ALLOW_ALARM_DELETION", "admin", BOOL, True, "The admin panel may delete alarms."),
    # LoggerNet Data Export: txm as the export server
    Setting("EXPORT_ENABLED", "dataexport", BOOL, False, "Run a LoggerNet Data Export server inside txm serve."),
    _port("EXPORT_PORT", "dataexport", 1200, "TCP port of the Data Export server."),
    Setting("EXPORT_FORMAT", "dataexport", STR, "standard", "Record format sent.", choices=("standard", "rtms")),
    Setting("EXPORT_TABLE", "dataexport", STR, "Samples", "Table name put in every exported record."),
    Setting("EXPORT_START", "dataexport", STR, "all",
            "Where the first session starts: every stored sample, or only the newest.", choices=("all", "newest")),
    Setting("EXPORT_RESEND_SECONDS", "dataexport", FLOAT, 60.0,
            "Seconds to wait for an acknowledgement before sending the same record again.", 0.01),
    Setting("EXPORT_MAX_RESENDS", "dataexport", INT, 5,
            "Times a record is sent again without an acknowledgement before the client is dropped (it resumes "
            "after the last acknowledged record when it comes back); 0: never dropped.", 0),
    Setting("EXPORT_ALLOWED_CLIENTS", "dataexport", NETWORKS, [],
            "Client addresses allowed to connect, as IP addresses and networks; others are closed at once. "
            "Empty or 'all': any address."),
    Setting("EXPORT_UNITS", "dataexport", LIST, [], "Unit codes to export; empty or 'all' exports every unit."),
    # LoggerNet Data Export: txm as the custom client
    Setting("LOGGERNET_HOST", "loggernet", STR, "",
            "Data Export server that txm serve pulls records from; empty: do not pull."),
    Setting("LOGGERNET_PORT", "loggernet", INT, 1200, "Port of that Data Export server.", 1, 65535),
    Setting("LOGGERNET_FORMAT", "loggernet", STR, "standard", "Record format the server sends.",
            choices=("standard", "rtms")),
    Setting("LOGGERNET_WATCHDOG_SECONDS", "loggernet", FLOAT, 300.0,
            "Close and reopen the connection when no record comes for this long (RecIntv2).", 0.01),
    Setting("LOGGERNET_AUTO_CREATE", "loggernet", BOOL, True,
            "Create a unit, with a generated key, for each new station and table."),
    Setting("LOGGERNET_UNITS", "loggernet", LIST, [],
            "Units for stations and tables, as STATION.TABLE=CODE entries (none by default); "
            "other stations and tables get auto-created units (or are refused)."),
    Setting("LOGGERNET_MAX_RECORD_BYTES", "loggernet", INT, 1_048_576,
            "Longest record accepted, in bytes; a longer one is logged, discarded and not acknowledged.", 1024),
)

BY_KEY: dict[str, Setting] = {s.key: s for s in SETTINGS}
SECTIONS: tuple[str, ...] = tuple(dict.fromkeys(s.section for s in SETTINGS))


# --- apps -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AppSetting:
    """An HTTP or TTP App named in ``[httpapps]`` / ``[ttpapps]``."""

    name: str
    enabled: bool
    url: str | None = None
    source: str = ""


# --- the settings object --------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Effective settings: every key's value, where it came from, and the apps."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    path: Path | None = None
    httpapps: Mapping[str, AppSetting] = field(default_factory=dict)
    ttpapps: Mapping[str, AppSetting] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    @property
    def base_dir(self) -> Path:
        """Folder that relative paths (DATABASE_NAME, HTTPApps/, TTPApps/) start from."""
        return self.path.parent if self.path else Path.cwd()

    def replace(self, **values: Any) -> "Settings":
        """A copy with some values replaced (each validated), marked as given on the command line."""
        new = dict(self.values)
        sources = dict(self.sources)
        for key, value in values.items():
            setting = BY_KEY.get(key)
            if setting is None:
                raise ConfigError(f"unknown setting {key}")
            try:
                new[key] = setting.check(setting.kind.accept(value))
            except ValueError:
                raise ConfigError(f"{key} must be {setting.expected()}, not {value!r}") from None
            sources[key] = "command line"
        return Settings(new, sources, self.path, self.httpapps, self.ttpapps)

    def sqlite_path(self) -> Path:
        """The SQLite database file these settings name."""
        name = self.values["DATABASE_NAME"]
        if not name:
            return default_data_dir() / "txm.db"
        # The Data Server's own configs name files Windows-style (db\data_server3.db).
        if os.sep == "/" and "\\" in name and not name.startswith("\\\\"):
            name = name.replace("\\", "/")
        path = Path(name).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def database_label(self) -> str:
        """Where the data lives, for people (no password)."""
        engine = self.values["DATABASE_ENGINE"]
        if engine == "sqlite3":
            return f"SQLite {self.sqlite_path()}"
        host = self.values["DATABASE_HOST"] or "local socket"
        port = f":{self.values['DATABASE_PORT']}" if self.values["DATABASE_PORT"] else ""
        return f"{engine} {self.values['DATABASE_NAME'] or 'txm'} on {host}{port}"


def default_data_dir() -> Path:
    """The per-user data folder where the default SQLite file lives."""
    from platformdirs import user_data_dir

    return Path(user_data_dir("txm", appauthor=False))


def defaults() -> Settings:
    """Settings with every key at its default."""
    return Settings({s.key: s.default for s in SETTINGS}, {s.key: "default" for s in SETTINGS})


# --- finding the file ---------------------------------------------------------------------


def search_paths(cwd: Path | None = None, home: Path | None = None) -> list[Path]:
    """Where txm looks for a configuration file, in order (TOML first in each folder)."""
    folders = [cwd or Path.cwd(), home or Path.home(), Path("/etc")]
    return [folder / name for folder in folders for name in (TOML_NAME, CONF_NAME)]


def find_config(explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                cwd: Path | None = None, home: Path | None = None) -> Path | None:
    """The configuration file to use: ``--config``, then ``$TXM_CONFIG``, then the search path."""
    env = os.environ if env is None else env
    for origin, given in (("--config", explicit), (ENV_VAR, env.get(ENV_VAR))):
        if given:
            path = Path(given).expanduser()
            if not path.is_file():
                raise ConfigError(f"configuration file {path} (from {origin}) does not exist")
            return path
    for path in search_paths(cwd, home):
        if path.is_file():
            return path
    return None


def load_settings(explicit: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                  cwd: Path | None = None, home: Path | None = None) -> Settings:
    """Find and read the configuration file; defaults where there is none."""
    path = find_config(explicit, env, cwd, home)
    return read_settings(path) if path else defaults()


def read_settings(path: str | os.PathLike) -> Settings:
    """Read one configuration file, TOML when it parses as such or is named ``*.toml``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from None
    if path.suffix == ".toml":
        return _from_toml(path, text)
    return _from_conf(path, text)


# --- the two formats -----------------------------------------------------------------------


class _Builder:
    """Collects values from either format, validating each as it comes."""

    def __init__(self, path: Path):
        self.path = path
        self.values = {s.key: s.default for s in SETTINGS}
        self.sources = {s.key: "default" for s in SETTINGS}
        self.apps: dict[str, dict[str, AppSetting]] = {name: {} for name in APP_SECTIONS}

    def where(self, line: int | None, section: str, key: str) -> str:
        if line is not None:
            return f"{self.path} line {line}"
        return f"{self.path} [{section}] {key}" if section != "main" else f"{self.path} {key}"

    def setting(self, section: str, key: str, raw: Any, line: int | None, from_text: bool) -> None:
        where = self.where(line, section, key)
        setting = BY_KEY.get(key) or BY_KEY.get(key.upper())
        if setting is None:
            known = ", ".join(sorted(BY_KEY)) if section == "main" else ", ".join(
                s.key for s in SETTINGS if s.section == section)
            raise ConfigError(f"{where}: unknown setting {key!r}; known settings here: {known}")
        if section not in ("main", setting.section):
            raise ConfigError(f"{where}: {setting.key} belongs in the [{setting.section}] section "
                              f"or at the top of the file, not in [{section}]")
        if from_text and raw.strip() == "" and setting.kind is not STR and setting.kind is not LIST:
            value = setting.default  # "DATABASE_PORT:" with no value, as Django-era files have
        else:
            try:
                parse = setting.kind.parse_text if from_text else setting.kind.accept
                value = parse(raw)
                if setting.kind is LIST and [v.lower() for v in value] == ["all"]:
                    value = []
                value = setting.check(value)
            except ValueError:
                shown = raw if setting.secret is False else "(hidden)"
                raise ConfigError(f"{where}: {setting.key} must be {setting.expected()}, "
                                  f"not {shown!r}") from None
        self.values[setting.key] = value
        self.sources[setting.key] = where

    def app(self, section: str, name: str, raw: Any, line: int | None, from_text: bool) -> None:
        where = self.where(line, section, name)
        base, _, attr = name.partition(".")
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", base) or attr not in ("", "url"):
            raise ConfigError(f"{where}: {name!r} is not an app entry; write 'NAME: on' or 'NAME.url: path/'")
        current = self.apps[section].get(base, AppSetting(base, False, None, where))
        if attr == "url":
            if section != "httpapps":
                raise ConfigError(f"{where}: only HTTP apps have a url")
            if not isinstance(raw, str) or not raw.strip():
                raise ConfigError(f"{where}: {name} must be a url path such as 'iphone/'")
            current = AppSetting(base, current.enabled, raw.strip(), current.source)
        else:
            try:
                enabled = _bool_text(raw) if from_text else _bool_value(raw)
            except ValueError:
                raise ConfigError(f"{where}: {name} must be on or off, not {raw!r}") from None
            current = AppSetting(base, enabled, current.url, where)
        self.apps[section][base] = current

    def result(self) -> Settings:
        return Settings(self.values, self.sources, self.path, self.apps["httpapps"], self.apps["ttpapps"])


_SECTION_RE = re.compile(r"^\[\s*([A-Za-z_][A-Za-z0-9_]*)\s*\]$")
_LINE_RE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*)\s*[:=]\s?(.*)$")


def _section_name(name: str) -> str | None:
    low = name.lower()
    if low in SECTIONS or low in APP_SECTIONS:
        return low
    return None


def _from_conf(path: Path, text: str) -> Settings:
    builder = _Builder(path)
    section = "main"
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped[0] in "#;":
            continue
        header = _SECTION_RE.match(stripped)
        if header:
            found = _section_name(header.group(1))
            if found is None:
                raise ConfigError(f"{path} line {number}: unknown section [{header.group(1)}]; "
                                  f"known sections: {', '.join(SECTIONS + APP_SECTIONS)}")
            section = found
            continue
        match = _LINE_RE.match(stripped)
        if not match:
            raise ConfigError(f"{path} line {number}: expected 'KEY: value' or '[section]', "
                              f"found {stripped[:60]!r}")
        key, raw = match.group(1), match.group(2).strip()
        if section in APP_SECTIONS:
            builder.app(section, key, raw, number, from_text=True)
        else:
            builder.setting(section, key, raw, number, from_text=True)
    return builder.result()


def _from_toml(path: Path, text: str) -> Settings:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    builder = _Builder(path)
    for key, value in data.items():
        if isinstance(value, dict):
            section = _section_name(key)
            if section is None:
                raise ConfigError(f"{path}: unknown section [{key}]; "
                                  f"known sections: {', '.join(SECTIONS + APP_SECTIONS)}")
            for sub, raw in value.items():
                if section in APP_SECTIONS:
                    _toml_app(builder, section, sub, raw)
                else:
                    builder.setting(section, sub, raw, None, from_text=False)
        else:
            builder.setting("main", key, value, None, from_text=False)
    return builder.result()


def _toml_app(builder: _Builder, section: str, name: str, raw: Any) -> None:
    """``iphone = true``, ``"iphone.url" = "iphone/"`` or ``iphone = {enabled = true, url = "iphone/"}``."""
    if isinstance(raw, dict):
        unknown = set(raw) - {"enabled", "url"}
        if unknown:
            raise ConfigError(f"{builder.where(None, section, name)}: unknown app option(s) "
                              f"{', '.join(sorted(unknown))}; expected enabled and url")
        builder.app(section, name, raw.get("enabled", True), None, from_text=False)
        if "url" in raw:
            builder.app(section, name + ".url", raw["url"], None, from_text=False)
    else:
        builder.app(section, name, raw, None, from_text=False)


def describe(settings: Settings) -> list[tuple[str, str, str, str]]:
    """Rows of (section, key, shown value, source) for ``txm config``; secrets are masked."""
    rows = []
    for s in SETTINGS:
        value = settings.values[s.key]
        if s.secret and value:
            shown = "********"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        elif isinstance(value, list):
            shown = ", ".join(value) if value else "all"
        else:
            shown = str(value)
        if s.key == "DATABASE_NAME" and settings.values["DATABASE_ENGINE"] == "sqlite3":
            shown = f"{shown or '(default)'} -> {settings.sqlite_path()}"
        rows.append((s.section, s.key, shown, _short(settings, settings.sources[s.key])))
    for section, apps in (("httpapps", settings.httpapps), ("ttpapps", settings.ttpapps)):
        for app in apps.values():
            shown = ("on" if app.enabled else "off") + (f", url {app.url}" if app.url else "")
            rows.append((section, app.name, shown, _short(settings, app.source)))
    return rows


def _short(settings: Settings, source: str) -> str:
    """A source inside the configuration file, named by the file's name only."""
    if settings.path and source.startswith(str(settings.path)):
        return settings.path.name + source[len(str(settings.path)):]
    return source


SECTION_TITLES = {
    "main": "Main (top of the file, or `[main]`)",
    "email": "Email (`[email]`)",
    "database": "Database (`[database]`)",
    "graph": "Graphs (`[graph]`)",
    "admin": "Admin panel (`[admin]`)",
    "dataexport": "LoggerNet Data Export server (`[dataexport]`)",
    "loggernet": "LoggerNet client (`[loggernet]`)",
}


def settings_markdown() -> str:
    """The settings reference of docs/settings.md, generated from the table."""
    out = []
    for section in SECTIONS:
        out.append(f"### {SECTION_TITLES.get(section, section)}\n")
        out.append("| setting | type | default | meaning |")
        out.append("| --- | --- | --- | --- |")
        for s in SETTINGS:
            if s.section != section:
                continue
            if isinstance(s.default, bool):
                default = "yes" if s.default else "no"
            elif isinstance(s.default, list):
                default = "all" if not s.default else ", ".join(s.default)
            else:
                default = str(s.default) if s.default != "" else "(empty)"
            out.append(f"| `{s.key}` | {s.expected()} | `{default}` | {s.help} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":  # python -m txm.config > reference block of docs/settings.md
    print(settings_markdown())
